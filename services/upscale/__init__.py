"""Upscale service (GANfolk stage 5, finishing): RRDBNet port, SR backends, finishing ops."""

from .rrdbnet import RRDBNetConfig, load_rrdbnet

__all__ = ["RRDBNetConfig", "load_rrdbnet"]
