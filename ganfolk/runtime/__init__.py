"""Shared runtime every GANfolk service stands on: settings, logging, metrics,
object store, gRPC bootstrap, JetStream setup and the one worker loop."""
