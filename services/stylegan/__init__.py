"""StyleGAN2 generator and discriminator (rosinality checkpoint format) and deterministic latents."""

from services.stylegan.latents import LatentMode, z_batch, z_from_seed
from services.stylegan.model import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    build_discriminator,
    build_generator,
    load_discriminator,
    load_generator,
)

__all__ = [
    "Discriminator",
    "DiscriminatorConfig",
    "Generator",
    "GeneratorConfig",
    "LatentMode",
    "build_discriminator",
    "build_generator",
    "load_discriminator",
    "load_generator",
    "z_batch",
    "z_from_seed",
]
