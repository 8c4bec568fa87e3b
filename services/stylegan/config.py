"""Settings of the StyleGAN2 sampling service (GANFOLK_STYLEGAN_*)."""

from __future__ import annotations

from typing import Literal

from ganfolk.runtime import limits
from ganfolk.runtime.settings import Settings


class StyleGANSettings(Settings):
    # "torch": our StyleGAN2 port with a rosinality checkpoint (the default, and the only backend
    # for minting). "mobilestylegan": the offline demo generator, MobileStyleGAN (FFHQ, 1024 px)
    # as OpenVINO IR from the random-face package -- weights derive from NVIDIA's FFHQ model,
    # non-commercial terms, local demo only; every output's provenance says so.
    stylegan_backend: Literal["torch", "mobilestylegan"] = "torch"
    # Folder with MappingNetwork.xml/.bin and SynthesisNetwork.xml/.bin; None: random_face/data.
    stylegan_mobile_dir: str | None = None
    # mobilestylegan only: Lanczos downscale of its 1024 px output (e.g. 512 or 256); None: 1024.
    stylegan_output_size: int | None = None
    # rosinality .pt (path, file:// or s3:// URI); required unless random weights are allowed.
    stylegan_checkpoint: str | None = None
    stylegan_checkpoint_sha256: str | None = None
    # Images per forward pass when the request leaves it unset.
    stylegan_batch_size: int = 8
    # Most seeds one request may ask for (the coordinator splits 1,000 into tasks).
    stylegan_max_seeds: int = limits.MAX_SEEDS_PER_SAMPLE_TASK
    # Samples for mean_latent() when the checkpoint has no latent_avg.
    stylegan_mean_latent_samples: int = 4096
    # Architecture used with random weights (demo/test mode only).
    stylegan_random_size: int = 64
    stylegan_random_style_dim: int = 64
    stylegan_output_prefix: str = "samples"
