"""StyleGAN2 generator (rosinality checkpoint format) and deterministic latents."""

from services.stylegan.latents import LatentMode, z_batch, z_from_seed
from services.stylegan.model import Generator, GeneratorConfig, build_generator, load_generator

__all__ = [
    "Generator",
    "GeneratorConfig",
    "LatentMode",
    "build_generator",
    "load_generator",
    "z_batch",
    "z_from_seed",
]
