"""Settings of the finishing service (GANFOLK_UPSCALE_*)."""

from __future__ import annotations

from typing import Literal

from ganfolk.runtime.settings import Settings


class UpscaleSettings(Settings):
    # Real-ESRGAN RRDBNet .pth (path or s3:// URI in the store); the GPU path when set.
    upscale_checkpoint: str | None = None
    upscale_checkpoint_sha256: str | None = None
    # auto: RRDBNet .pth when configured, else ncnn Real-ESRGAN, else Lanczos.
    upscale_backend: Literal["auto", "torch", "ncnn", "lanczos"] = "auto"
    # Tiles bound memory for a 2048 px output; overlap hides the seams.
    upscale_tile: int = 256
    upscale_tile_overlap: int = 16
    # Largest input, in pixels (512 x 512 is the GANfolk size; 4x gives 2048 x 2048).
    upscale_max_input_pixels: int = 1024 * 1024
    upscale_output_prefix: str = "finished"
