"""VQGAN (taming-transformers format) in pure PyTorch."""

from services.vqgan.model import VQGAN, VQGANConfig, build_vqgan, load_vqgan

__all__ = ["VQGAN", "VQGANConfig", "build_vqgan", "load_vqgan"]
