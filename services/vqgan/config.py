"""Settings of the VQGAN+CLIP refinement service (GANFOLK_VQGAN_*)."""

from __future__ import annotations

from pydantic import Field

from ganfolk.runtime.settings import Settings


class VQGANSettings(Settings):
    # taming-transformers VQGAN: .ckpt (path, file:// or s3:// URI) + its .yaml; required unless
    # random weights are allowed.
    vqgan_checkpoint: str | None = None
    vqgan_config: str | None = None
    vqgan_checkpoint_sha256: str | None = None
    # CLIP, loaded through services.clip.loader (open_clip architecture name + checkpoint).
    vqgan_clip_model: str = "ViT-B-32"
    # An extra open_clip JSON model config to register (file stem = model name).
    vqgan_clip_model_config: str | None = None
    vqgan_clip_checkpoint: str | None = None
    vqgan_clip_sha256: str | None = None

    # Architecture used with random VQGAN weights (demo/test mode only): factor 2**(len(ch_mult)-1).
    vqgan_random_embed_dim: int = 16
    vqgan_random_n_embed: int = 64
    vqgan_random_ch: int = 32
    vqgan_random_ch_mult: tuple[int, ...] = (1, 2)
    vqgan_random_resolution: int = 32

    # Request defaults and limits. Unset request fields take the GANfolk notebook defaults;
    # the default size is a setting so a small demo model does not start at 512 px.
    vqgan_default_size: int = Field(512, ge=1)
    vqgan_max_size: int = Field(1024, ge=1)
    vqgan_max_cutn: int = Field(256, ge=1)
    vqgan_max_iterations: int = Field(10_000, ge=1)
    vqgan_max_prompts: int = Field(16, ge=1)
    # Estimated memory one refinement may use (decoder activations at `size` + CLIP on `cutn`
    # cutouts, forward and backward). None: 90% of the GPU's memory on CUDA, half the RAM on CPU.
    # The estimate is generous: the f16 model with ViT-B-32 at 512 px and cutn 64 comes to ~17 GiB.
    # A request over it fails at once with RESOURCE_EXHAUSTED naming cutn or size to lower.
    vqgan_memory_budget_mb: float | None = Field(None, gt=0)
    # Object-store prefix of direct gRPC calls that send no output_prefix.
    vqgan_output_prefix: str = "refine"
    # NATS progress events between snapshots: at most one per this many seconds.
    vqgan_progress_interval_s: float = Field(2.0, ge=0.0)
    # torch intra-op threads on CPU (None: torch's default). On a shared, busy CPU one thread can be
    # many times faster than several spinning OpenMP threads.
    vqgan_cpu_threads: int | None = Field(None, ge=1)
