"""Settings of the StyleGAN2 sampling service (GANFOLK_STYLEGAN_*)."""

from __future__ import annotations

from ganfolk.runtime.settings import Settings


class StyleGANSettings(Settings):
    grpc_port: int = 50062
    # rosinality .pt (path, file:// or s3:// URI); required unless random weights are allowed.
    stylegan_checkpoint: str | None = None
    stylegan_checkpoint_sha256: str | None = None
    # Images per forward pass when the request leaves it unset.
    stylegan_batch_size: int = 8
    # Most seeds one request may ask for (the coordinator splits 1,000 into tasks).
    stylegan_max_seeds: int = 1000
    # Samples for mean_latent() when the checkpoint has no latent_avg.
    stylegan_mean_latent_samples: int = 4096
    # Architecture used with random weights (demo/test mode only).
    stylegan_random_size: int = 64
    stylegan_random_style_dim: int = 64
    stylegan_output_prefix: str = "samples"
