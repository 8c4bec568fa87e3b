"""Finishing stage (GANfolk stage 5): vignette -> optional unsharp mask -> a little noise -> 4x SR.

Pure functions.  Images are numpy arrays (H, W, C) or (H, W), either ``uint8``
(0..255) or floating point (0..1), or torch tensors (C, H, W) / (N, C, H, W)
floats in 0..1.  Every op returns the same kind, dtype and shape it was given.

The article's post-processing: "a vignette to fade the corners", "an unsharp
mask to sharpen details (optional)", "a little random noise before resizing
to create a painterly effect", then super-resolution from 512x512 to
2048x2048.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
from PIL import Image, ImageFilter

from .backends import SRBackend

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FinishParams",
    "add_noise",
    "finish",
    "unsharp_mask",
    "vignette",
    "vignette_mask",
]

ImageT = TypeVar("ImageT", np.ndarray, torch.Tensor)

# 4096 x 4096: far above the 512 px inputs of the pipeline, far below a bomb.
DEFAULT_MAX_PIXELS = 4096 * 4096


# --------------------------------------------------------------------------- helpers


def _check_image(img: Any, op: str) -> None:
    if isinstance(img, torch.Tensor):
        if img.ndim not in (3, 4) or not img.is_floating_point():
            raise ValueError(
                f"{op}: a torch image must be a float tensor (C, H, W) or (N, C, H, W), "
                f"got {img.dtype} {tuple(img.shape)}"
            )
        if img.shape[-1] == 0 or img.shape[-2] == 0:
            raise ValueError(f"{op}: empty image {tuple(img.shape)}")
        return
    if not isinstance(img, np.ndarray):
        raise ValueError(f"{op}: expected a numpy array or torch tensor, got {type(img).__name__}")
    if img.ndim not in (2, 3):
        raise ValueError(f"{op}: a numpy image must be (H, W) or (H, W, C), got shape {img.shape}")
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"{op}: a numpy image must be uint8 (0..255) or float (0..1), got {img.dtype}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{op}: empty image of shape {img.shape}")


def _to_float_hwc(img: np.ndarray) -> np.ndarray:
    """numpy uint8 / float image -> float32 in 0..1 (a copy)."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return img.astype(np.float32, copy=True)


def _from_float_like(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    if like.dtype == np.uint8:
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    return out.astype(like.dtype, copy=False)


def _torch_to_nhwc(img: torch.Tensor) -> np.ndarray:
    batch = img if img.ndim == 4 else img.unsqueeze(0)
    return batch.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()


def _nhwc_to_torch(arr: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    out = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    if like.ndim == 3:
        out = out[0]
    return out.to(device=like.device, dtype=like.dtype).contiguous()


def _check_range(name: str, value: Any, lo: float, hi: float, hint: str, *, hi_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}; {hint}")
    too_high = value >= hi if hi_open else value > hi
    if value < lo or too_high:
        upper = f"below {hi}" if hi_open else f"at most {hi}"
        raise ValueError(f"{name} must be at least {lo} and {upper}, got {value}; {hint}")


# --------------------------------------------------------------------------- vignette


def vignette_mask(height: int, width: int, strength: float, radius: float) -> np.ndarray:
    """(H, W) float32 gain: 1 inside ``radius``, falling smoothly to ``1 - strength`` at the corners.

    Distance is measured from the image centre and normalised so the corners are
    at 1 (an elliptical vignette on non-square images).  Between ``radius`` and 1
    the gain follows a smoothstep, so there is no visible ring.
    """
    _check_range("vignette strength", strength, 0.0, 1.0, "0 disables the vignette, 1 blackens the corners")
    _check_range(
        "vignette radius",
        radius,
        0.0,
        1.0,
        "it is the untouched fraction of the centre-to-corner distance, e.g. 0.5",
        hi_open=True,
    )
    ys = (np.arange(height, dtype=np.float64) + 0.5) / height * 2.0 - 1.0
    xs = (np.arange(width, dtype=np.float64) + 0.5) / width * 2.0 - 1.0
    r = np.sqrt((ys[:, None] ** 2 + xs[None, :] ** 2) / 2.0)  # 1 at the corner pixels' outer edge
    t = np.clip((r - radius) / (1.0 - radius), 0.0, 1.0)
    falloff = t * t * (3.0 - 2.0 * t)
    return (1.0 - strength * falloff).astype(np.float32)


def vignette(img: ImageT, strength: float = 0.3, radius: float = 0.5) -> ImageT:
    """Darken towards the corners by up to ``strength`` (0..1); pixels within ``radius`` are unchanged."""
    _check_image(img, "vignette")
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2:]
        gain = torch.from_numpy(vignette_mask(h, w, strength, radius)).to(img.device, img.dtype)
        return img * gain
    h, w = img.shape[:2]
    gain = vignette_mask(h, w, strength, radius)
    if img.ndim == 3:
        gain = gain[:, :, None]
    if img.dtype == np.uint8:
        # exact identity where the gain is exactly 1 (rint(v * 1.0) == v)
        return np.clip(np.rint(img.astype(np.float32) * gain), 0, 255).astype(np.uint8)
    return (img * gain).astype(img.dtype, copy=False)


# --------------------------------------------------------------------------- unsharp mask


def _check_unsharp(radius: float, percent: float, threshold: float) -> None:
    _check_range(
        "unsharp radius", radius, 0.0, 100.0, "it is the blur's standard deviation in pixels, e.g. 2"
    )
    _check_range("unsharp percent", percent, 0.0, 1000.0, "it is the strength, e.g. 150")
    _check_range(
        "unsharp threshold",
        threshold,
        0.0,
        255.0,
        "only differences above it (in 0..255 levels) are sharpened, e.g. 3",
    )


def _pil_gaussian_blur(img: np.ndarray, radius: float, passes: int = 3) -> np.ndarray:
    """PIL's ``GaussianBlur(radius)`` in float32: ``passes`` extended-box blurs per axis, edges replicated.

    PIL approximates a Gaussian of standard deviation ``radius`` by box filters of
    fractional radius ``l + a`` (Gwosdek et al., "Theoretical foundations of
    Gaussian convolution by extended box filtering", 2011).
    """
    sigma2 = radius * radius / passes
    box_len = math.sqrt(12.0 * sigma2 + 1.0)
    whole = math.floor((box_len - 1.0) / 2.0)
    frac = (2 * whole + 1) * (whole * (whole + 1) - 3 * sigma2) / (6 * (sigma2 - (whole + 1) ** 2))
    kernel = np.ones(2 * whole + 3, dtype=np.float64)
    kernel[0] = kernel[-1] = frac
    kernel = (kernel / (2 * (whole + frac) + 1)).astype(np.float32)
    out = img
    for axis_kernel in (kernel.reshape(1, -1), kernel.reshape(-1, 1)):
        for _ in range(passes):
            out = cv2.filter2D(out, -1, axis_kernel, borderType=cv2.BORDER_REPLICATE)
    return out


def _unsharp_float(img: np.ndarray, radius: float, percent: float, threshold: float) -> np.ndarray:
    """PIL's unsharp mask on float32 (H, W[, C]) in 0..1; threshold in 0..255 levels."""
    if radius == 0:
        return img.copy()
    blurred = _pil_gaussian_blur(img, radius)
    if blurred.ndim < img.ndim:
        blurred = blurred[..., None]
    diff = img - blurred
    sharpened = np.clip(img + diff * (percent / 100.0), 0.0, 1.0)
    # PIL sharpens where the integer difference exceeds the threshold: |d| > t  <=>  round(|d|) >= t + 1
    return np.where(np.abs(diff) * 255.0 > threshold + 0.5, sharpened, img).astype(np.float32)


def unsharp_mask(img: ImageT, radius: float = 2.0, percent: float = 150, threshold: float = 3) -> ImageT:
    """Unsharp mask with PIL's semantics (``ImageFilter.UnsharpMask(radius, percent, threshold)``).

    ``radius`` is the Gaussian blur's standard deviation in pixels, ``percent`` the
    strength (150 adds 1.5x the detail back), ``threshold`` the difference from the
    blurred image, in 0..255 levels, that a pixel must exceed to be sharpened.
    ``uint8`` RGB/L images go through PIL itself; float images through the same
    algorithm in float32 (PIL's extended-box Gaussian, without its 8-bit rounding).
    """
    _check_image(img, "unsharp_mask")
    _check_unsharp(radius, percent, threshold)
    if isinstance(img, torch.Tensor):
        batch = _torch_to_nhwc(img)
        out = np.stack([_unsharp_float(frame, radius, percent, threshold) for frame in batch])
        return _nhwc_to_torch(out, img)
    if img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (1, 3, 4)):
        squeeze = img.ndim == 3 and img.shape[2] == 1
        src = img[:, :, 0] if squeeze else img
        flt = ImageFilter.UnsharpMask(radius=radius, percent=round(percent), threshold=round(threshold))
        res = np.asarray(Image.fromarray(np.ascontiguousarray(src)).filter(flt), dtype=np.uint8).copy()
        return res[:, :, None] if squeeze else res
    out = _unsharp_float(_to_float_hwc(img), radius, percent, threshold)
    return _from_float_like(out, img)


# --------------------------------------------------------------------------- noise


def _noise_field(shape: tuple[int, ...], amount: float, seed: int, monochrome: bool) -> np.ndarray:
    """Zero-mean Gaussian noise of std ``amount`` for an (N, H, W, C) image."""
    rng = np.random.default_rng(seed)
    n, h, w, c = shape
    if monochrome:
        field = rng.standard_normal((n, h, w, 1), dtype=np.float32)
    else:
        field = rng.standard_normal((n, h, w, c), dtype=np.float32)
    return field * np.float32(amount)


def add_noise(img: ImageT, amount: float = 0.02, seed: int = 0, *, monochrome: bool = True) -> ImageT:
    """Add seeded Gaussian noise of standard deviation ``amount`` (fraction of full scale, 0..1).

    The same seed and shape give the same noise, bit for bit.  ``monochrome``
    adds the same value to every channel of a pixel (film-grain-like, no colour
    speckle); otherwise each channel gets its own.  Results are clipped to the
    valid range (and rounded for ``uint8``).
    """
    _check_image(img, "add_noise")
    _check_range(
        "noise amount",
        amount,
        0.0,
        1.0,
        "it is the noise's standard deviation as a fraction of full scale, e.g. 0.02; 0 disables it",
    )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"noise seed must be a non-negative integer, got {seed!r}")
    if isinstance(img, torch.Tensor):
        batch = _torch_to_nhwc(img)
        noisy = np.clip(batch + _noise_field(batch.shape, amount, int(seed), monochrome), 0.0, 1.0)
        return _nhwc_to_torch(noisy, img)
    flt = _to_float_hwc(img)
    nhwc = flt.reshape(1, flt.shape[0], flt.shape[1], -1)
    noisy = np.clip(nhwc + _noise_field(nhwc.shape, amount, int(seed), monochrome), 0.0, 1.0)
    return _from_float_like(noisy.reshape(flt.shape), img)


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class FinishParams:
    """Finishing parameters; defaults follow the article (gentle vignette, no unsharp, a little noise, 4x)."""

    vignette_strength: float = 0.3
    vignette_radius: float = 0.5
    unsharp: bool = False
    unsharp_radius: float = 2.0
    unsharp_percent: int = 150
    unsharp_threshold: int = 3
    noise_amount: float = 0.02
    noise_seed: int = 0
    noise_monochrome: bool = True
    scale: int = 4

    def __post_init__(self) -> None:
        _check_range(
            "vignette_strength",
            self.vignette_strength,
            0.0,
            1.0,
            "use 0 to turn the vignette off, 0.3 for the default gentle one",
        )
        _check_range(
            "vignette_radius",
            self.vignette_radius,
            0.0,
            1.0,
            "it is the untouched fraction of the centre-to-corner distance, default 0.5",
            hi_open=True,
        )
        if not isinstance(self.unsharp, bool):
            raise ValueError(f"unsharp must be true or false, got {self.unsharp!r}")
        _check_range(
            "unsharp_radius",
            self.unsharp_radius,
            0.0,
            100.0,
            "it is the blur's standard deviation in pixels, default 2",
        )
        _check_range("unsharp_percent", self.unsharp_percent, 0.0, 1000.0, "it is the strength, default 150")
        _check_range(
            "unsharp_threshold", self.unsharp_threshold, 0.0, 255.0, "it is in 0..255 levels, default 3"
        )
        _check_range(
            "noise_amount",
            self.noise_amount,
            0.0,
            0.5,
            "it is the noise's standard deviation as a fraction of full scale, default 0.02, 0 for none",
        )
        if (
            isinstance(self.noise_seed, bool)
            or not isinstance(self.noise_seed, int)
            or not (0 <= self.noise_seed < 2**63)
        ):
            raise ValueError(f"noise_seed must be an integer in [0, 2**63), got {self.noise_seed!r}")
        if not isinstance(self.noise_monochrome, bool):
            raise ValueError(f"noise_monochrome must be true or false, got {self.noise_monochrome!r}")
        if isinstance(self.scale, bool) or self.scale not in (1, 2, 4):
            raise ValueError(f"scale must be 1, 2 or 4 (4 turns 512 px into 2048 px), got {self.scale!r}")


# --------------------------------------------------------------------------- pipeline


def finish(img: np.ndarray, params: FinishParams, backend: SRBackend) -> tuple[np.ndarray, dict[str, Any]]:
    """Run vignette -> optional unsharp -> noise -> super-resolution on an RGB image.

    ``img`` is (H, W, 3) ``uint8`` (or float in 0..1).  Returns the upscaled
    (H*scale, W*scale, 3) ``uint8`` image and a provenance dict: the steps run, the
    parameters, the backend's name, ``model_id`` and notes, sizes and timings.
    """
    _check_image(img, "finish")
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"finish expects an RGB numpy image (H, W, 3), got {getattr(img, 'shape', img)!r}")
    if not isinstance(params, FinishParams):
        raise ValueError(f"params must be a FinishParams, got {type(params).__name__}")
    timings: dict[str, float] = {}
    steps: list[str] = []
    work = _to_float_hwc(img)
    t0 = time.perf_counter()
    if params.vignette_strength > 0:
        work = vignette(work, params.vignette_strength, params.vignette_radius)
        steps.append("vignette")
    t1 = time.perf_counter()
    timings["vignette_ms"] = (t1 - t0) * 1e3
    if params.unsharp:
        work = unsharp_mask(work, params.unsharp_radius, params.unsharp_percent, params.unsharp_threshold)
        steps.append("unsharp_mask")
    t2 = time.perf_counter()
    timings["unsharp_ms"] = (t2 - t1) * 1e3
    if params.noise_amount > 0:
        work = add_noise(work, params.noise_amount, params.noise_seed, monochrome=params.noise_monochrome)
        steps.append("noise")
    t3 = time.perf_counter()
    timings["noise_ms"] = (t3 - t2) * 1e3
    finished = np.clip(np.rint(work * 255.0), 0, 255).astype(np.uint8)
    if params.scale > 1:
        out = backend.upscale(finished, scale=params.scale)
        steps.append(f"super_resolution_x{params.scale}")
    else:
        out = finished
    t4 = time.perf_counter()
    timings["super_resolution_ms"] = (t4 - t3) * 1e3
    expected = (img.shape[0] * params.scale, img.shape[1] * params.scale, 3)
    if out.shape != expected or out.dtype != np.uint8:
        raise RuntimeError(
            f"backend {backend.name} returned {out.dtype} {out.shape}, expected uint8 {expected}"
        )
    provenance: dict[str, Any] = {
        "stage": "finish",
        "steps": steps,
        "params": asdict(params),
        "backend": backend.name,
        "model_id": backend.model_id,
        "notes": list(backend.notes),
        "random_weights": "RANDOM" in backend.model_id.upper(),
        "input_size": [int(img.shape[1]), int(img.shape[0])],
        "output_size": [int(out.shape[1]), int(out.shape[0])],
        "timings_ms": {k: round(v, 3) for k, v in timings.items()},
    }
    return out, provenance
