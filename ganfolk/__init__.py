"""GANfolk: text prompt -> named, minted portrait, as gRPC + NATS microservices."""

__version__ = "0.1.0"
