"""Settings of the CLIP scoring service (GANFOLK_CLIP_*)."""

from __future__ import annotations

from pydantic import Field

from ganfolk.runtime.settings import Settings


class ClipSettings(Settings):
    # open_clip architecture name (open_clip.list_models()); ViT-B/32 at 224 px is the GANfolk default.
    clip_model: str = "ViT-B-32"
    # An extra open_clip JSON model config to register (file stem = model name), for custom sizes.
    clip_model_config: str | None = None
    # Weights: path, file:// or s3:// URI; required unless random weights are allowed.
    clip_checkpoint: str | None = None
    clip_checkpoint_sha256: str | None = None
    # Rows per forward pass inside one request.
    clip_image_batch_size: int = Field(32, ge=1, le=4096)
    clip_text_batch_size: int = Field(64, ge=1, le=4096)
    # Dynamic batching across concurrent requests (as Triton's dynamic batcher): a forward pass
    # starts when max_batch rows are queued or max_wait_ms after the first queued row.
    clip_dynamic_batching: bool = True
    clip_max_batch: int = Field(64, ge=1, le=4096)
    clip_max_wait_ms: float = Field(5.0, ge=0.0, le=1000.0)
    # LRU cache of text embeddings (entries); 0 disables it.
    clip_text_cache_size: int = Field(4096, ge=0)
    # Request limits.
    clip_max_texts: int = Field(256, ge=1)
    clip_max_prompts: int = Field(32, ge=1)
    clip_max_images: int = Field(256, ge=1)
    # Longest text or prompt, in characters. CLIP reads only its context (77 tokens, a few hundred
    # characters); the limit bounds tokenizing time and the text cache's keys.
    clip_max_text_chars: int = Field(2000, ge=1, le=1_000_000)
    # Largest image, in pixels (below GANFOLK_MAX_IMAGE_PIXELS when that is smaller). CLIP sees
    # 224 px; decoded images are held while they are preprocessed, up to READ_CONCURRENCY at once.
    clip_max_image_pixels: int = Field(4096 * 4096, ge=1)
    # Images under an image_prefix one Rank may score (a rank task holds 1,000 samples).
    clip_max_prefix_images: int = Field(10_000, ge=1)
    # Images decoded at once while ranking; memory stays bounded by this, not by the image count.
    clip_rank_chunk: int = Field(64, ge=1, le=4096)
    # Images read from the store and decoded at once, across all requests of the process.
    clip_read_concurrency: int = Field(8, ge=1, le=256)
