"""Quality metrics for training: ProGAN's sliced Wasserstein distance, and FID/KID when configured.

SWD (Karras et al. 2018, "Progressive Growing of GANs", appendix D) needs no downloaded weights:
each image set is split into a Laplacian pyramid (5x5 binomial filter, down to ``min_resolution``),
``nhoods_per_image`` random 7x7 neighbourhoods are cut from every level of every image, each set's
descriptors are normalised per colour channel by that set's own mean and std, and per level the
distance is the mean, over ``dir_repeats`` x ``dirs_per_repeat`` random unit directions, of the 1-D
Wasserstein distance between the two sets' projections (sorted projections, mean absolute
difference). As ProGAN prints them, distances are reported x 1e3, per level (finest first) and
their mean. The same ``seed`` draws the same neighbourhoods and directions, so runs compare.

FID and KID need an Inception network, which is never downloaded: they run only when
``GANFOLK_TRAIN_INCEPTION_CHECKPOINT`` names a TorchScript file such as NVIDIA's
``inception-2015-12-05.pt`` (StyleGAN2-ADA's metric network), see :func:`inception_from_env`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ganfolk.runtime.errors import InvalidArgument

__all__ = [
    "INCEPTION_ENV",
    "Descriptors",
    "FeatureExtractor",
    "SWDResult",
    "extract_features",
    "fid",
    "inception_from_env",
    "kid",
    "laplacian_pyramid",
    "load_inception",
    "pyramid_descriptors",
    "sliced_wasserstein",
    "swd",
    "swd_min_resolution",
]

INCEPTION_ENV = "GANFOLK_TRAIN_INCEPTION_CHECKPOINT"

FeatureExtractor = Callable[[Tensor], Tensor]
"""Images (N, 3, H, W) float in [-1, 1] -> features (N, D)."""


# --------------------------------------------------------------------------- Laplacian pyramid


def _binomial(channels: int, device: torch.device) -> Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device)
    k2 = torch.outer(k, k) / 256.0
    return k2.expand(channels, 1, 5, 5)


def _blur(x: Tensor, gain: float = 1.0) -> Tensor:
    kernel = _binomial(x.shape[1], x.device) * gain
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def _down(x: Tensor) -> Tensor:
    return _blur(x)[..., ::2, ::2]


def _up(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    wide = x.new_zeros(n, c, 2 * h, 2 * w)
    wide[..., ::2, ::2] = x
    # Three of four samples are zero: a gain of 4 keeps the brightness.
    return _blur(wide, gain=4.0)


def laplacian_pyramid(images: Tensor, levels: int) -> list[Tensor]:
    """``levels`` band-pass images, finest first; the last level is the low-pass residual."""
    out = []
    x = images
    for _ in range(levels - 1):
        small = _down(x)
        out.append(x - _up(small))
        x = small
    out.append(x)
    return out


# --------------------------------------------------------------------------- SWD


@dataclass
class Descriptors:
    """Raw (unnormalised) 7x7 neighbourhoods per pyramid level, flattened: (M, C*7*7) each."""

    resolutions: list[int]
    levels: list[Tensor]
    channels: int


@dataclass(frozen=True)
class SWDResult:
    """Sliced Wasserstein distances x 1e3, per pyramid level (finest first) and their mean."""

    resolutions: list[int]
    per_level: list[float]
    mean: float

    def as_dict(self) -> dict[str, float]:
        """``{"swd_32": ..., "swd_16": ..., "swd_mean": ...}`` for logs."""
        return {
            **{f"swd_{r}": d for r, d in zip(self.resolutions, self.per_level, strict=True)},
            "swd_mean": self.mean,
        }

    def __str__(self) -> str:
        levels = ", ".join(f"{r}px {d:.2f}" for r, d in zip(self.resolutions, self.per_level, strict=True))
        return f"SWD x1e3: {levels}; mean {self.mean:.2f}"


def _batches(images: Tensor | Iterable[Tensor]) -> Iterable[Tensor]:
    return images.split(256) if isinstance(images, Tensor) else images


def swd_min_resolution(size: int) -> int:
    """The coarsest pyramid level for ``size`` px images: ProGAN's 16 px, or 8 px below 64 px.

    ProGAN stops at 16 px, which leaves a 32 px image only its finest band and one low-pass
    residual. On small images the finest band is mostly pixel-scale texture, the last thing a
    generator learns, so a third level (8 px, the smallest that holds a 7x7 neighbourhood) keeps
    the mean sensitive to shapes as well as colours.
    """
    return 16 if size >= 64 else min(8, size)


def pyramid_descriptors(
    images: Tensor | Iterable[Tensor],
    *,
    nhoods_per_image: int = 128,
    nhood_size: int = 7,
    min_resolution: int = 16,
    generator: torch.Generator | None = None,
) -> Descriptors:
    """Random neighbourhoods from each Laplacian level of (N, C, H, W) images, or an iterable of batches.

    Positions come from ``generator`` (CPU), so a seeded generator draws the same ones every time.
    """
    if nhood_size < 1 or nhood_size % 2 == 0 or nhoods_per_image < 1:
        raise InvalidArgument(
            f"nhood_size must be odd and nhoods_per_image >= 1, got {nhood_size}, {nhoods_per_image}"
        )
    found: list[list[Tensor]] = []
    resolutions: list[int] = []
    shape: tuple[int, ...] = ()
    for batch in _batches(images):
        if batch.ndim != 4 or batch.shape[2] != batch.shape[3]:
            raise InvalidArgument(f"images must be square (N, C, H, W) batches, got {tuple(batch.shape)}")
        if not shape:
            shape = tuple(batch.shape[1:])
            size = shape[1]
            if size < max(min_resolution, nhood_size):
                raise InvalidArgument(f"images of {size} px are smaller than min_resolution {min_resolution}")
            while size >= min_resolution:
                resolutions.append(size)
                size //= 2
            found = [[] for _ in resolutions]
        elif tuple(batch.shape[1:]) != shape:
            raise InvalidArgument(f"batches differ in shape: {tuple(batch.shape[1:])} after {shape}")
        pyramid = laplacian_pyramid(batch.float(), len(resolutions))
        for level, out in zip(pyramid, found, strict=True):
            out.append(_neighbourhoods(level, nhoods_per_image, nhood_size, generator))
    if not resolutions:
        raise InvalidArgument("no images to describe")
    return Descriptors(resolutions, [torch.cat(parts) for parts in found], shape[0])


def _neighbourhoods(level: Tensor, per_image: int, size: int, generator: torch.Generator | None) -> Tensor:
    n, c, h, w = level.shape
    count = n * per_image
    ys = torch.randint(0, h - size + 1, (count,), generator=generator).to(level.device)
    xs = torch.randint(0, w - size + 1, (count,), generator=generator).to(level.device)
    offsets = torch.arange(size, device=level.device)
    image = torch.arange(n, device=level.device).repeat_interleave(per_image)
    patches = level[
        image[:, None, None, None],
        torch.arange(c, device=level.device)[None, :, None, None],
        (ys[:, None] + offsets)[:, None, :, None],
        (xs[:, None] + offsets)[:, None, None, :],
    ]
    return patches.reshape(count, -1)


def _normalise(desc: Tensor, channels: int) -> Tensor:
    per_channel = desc.reshape(desc.shape[0], channels, -1)
    mean = per_channel.mean(dim=(0, 2), keepdim=True)
    std = per_channel.std(dim=(0, 2), keepdim=True).clamp_min(1e-8)  # a flat level has no spread
    return ((per_channel - mean) / std).reshape(desc.shape[0], -1)


def sliced_wasserstein(
    a: Tensor,
    b: Tensor,
    *,
    dirs_per_repeat: int = 128,
    dir_repeats: int = 4,
    generator: torch.Generator | None = None,
) -> float:
    """Mean 1-D Wasserstein distance of (M, D) descriptor sets along random unit directions.

    Sets of different sizes are compared on a random subset of the larger one of the smaller's size.
    """
    if a.shape[1] != b.shape[1]:
        raise InvalidArgument(f"descriptor widths differ: {a.shape[1]} and {b.shape[1]}")
    m = min(len(a), len(b))
    if len(a) > m:
        a = a[torch.randperm(len(a), generator=generator)[:m].to(a.device)]
    if len(b) > m:
        b = b[torch.randperm(len(b), generator=generator)[:m].to(b.device)]
    total = 0.0
    for _ in range(dir_repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=generator).to(a.device)
        dirs /= dirs.norm(dim=0, keepdim=True)
        pa, _ = (a @ dirs).sort(dim=0)
        pb, _ = (b @ dirs).sort(dim=0)
        total += float((pa - pb).abs().mean())
    return total / dir_repeats


def swd(
    a: Tensor | Iterable[Tensor] | Descriptors,
    b: Tensor | Iterable[Tensor] | Descriptors,
    *,
    nhoods_per_image: int = 128,
    nhood_size: int = 7,
    dirs_per_repeat: int = 128,
    dir_repeats: int = 4,
    min_resolution: int = 16,
    seed: int = 0,
) -> SWDResult:
    """ProGAN's sliced Wasserstein distance between two image sets (see the module docstring).

    ``a`` and ``b`` are (N, C, H, W) tensors (any value range: each set is normalised), iterables of
    such batches, or :func:`pyramid_descriptors` of them (compute the reals' once, reuse every eval).
    """
    opts = {"nhoods_per_image": nhoods_per_image, "nhood_size": nhood_size, "min_resolution": min_resolution}

    def describe(x: Tensor | Iterable[Tensor] | Descriptors) -> Descriptors:
        # Each set draws its positions from its own copy of the seed: a set against itself is 0.
        if isinstance(x, Descriptors):
            return x
        return pyramid_descriptors(x, generator=torch.Generator().manual_seed(seed), **opts)

    da, db = describe(a), describe(b)
    generator = torch.Generator().manual_seed(seed)
    if da.resolutions != db.resolutions:
        raise InvalidArgument(f"the sets have different pyramids: {da.resolutions} and {db.resolutions}")
    if da.channels != db.channels:
        raise InvalidArgument(f"the sets have {da.channels} and {db.channels} channels")
    dists = [
        1e3
        * sliced_wasserstein(
            _normalise(x, da.channels),
            _normalise(y, db.channels),
            dirs_per_repeat=dirs_per_repeat,
            dir_repeats=dir_repeats,
            generator=generator,
        )
        for x, y in zip(da.levels, db.levels, strict=True)
    ]
    return SWDResult(da.resolutions, dists, float(np.mean(dists)))


# --------------------------------------------------------------------------- FID / KID


def _as_array(features: Tensor | np.ndarray) -> np.ndarray:
    x = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    if x.ndim != 2:
        raise InvalidArgument(f"features must be (N, D), got shape {x.shape}")
    return x.astype(np.float64)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(m)
    return (vecs * np.sqrt(vals.clip(min=0))) @ vecs.T


def fid(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets.

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2)``, the trace of the root taken from the
    symmetric ``S_a^1/2 S_b S_a^1/2`` (same eigenvalues, and stable where ``S_a S_b`` is not symmetric).
    """
    x, y = _as_array(a), _as_array(b)
    if x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise InvalidArgument(f"need two sets of >= 2 features of one width, got {x.shape} and {y.shape}")
    mu = x.mean(0) - y.mean(0)
    sa, sb = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = _psd_sqrt(sa)
    cross = np.sqrt(np.linalg.eigvalsh(root @ sb @ root).clip(min=0)).sum()
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * cross)


def kid(
    a: Tensor | np.ndarray,
    b: Tensor | np.ndarray,
    *,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """Kernel Inception Distance: unbiased MMD² with the cubic kernel ``(x·y / D + 1)^3``.

    Averaged over ``num_subsets`` random subsets of ``min(N_a, N_b, max_subset_size)`` from each set,
    as StyleGAN2-ADA computes it.
    """
    x, y = _as_array(a), _as_array(b)
    if x.shape[1] != y.shape[1]:
        raise InvalidArgument(f"feature widths differ: {x.shape[1]} and {y.shape[1]}")
    m = min(len(x), len(y), max_subset_size)
    if m < 2 or num_subsets < 1:
        raise InvalidArgument(
            f"KID needs subsets of >= 2 features and >= 1 subset, got {m} and {num_subsets}"
        )
    d = x.shape[1]
    rng = np.random.default_rng(seed)

    def kernel(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        out: np.ndarray = (p @ q.T / d + 1) ** 3
        return out

    total = 0.0
    for _ in range(num_subsets):
        xs = x[rng.choice(len(x), m, replace=False)]
        ys = y[rng.choice(len(y), m, replace=False)]
        kxx, kyy = kernel(xs, xs), kernel(ys, ys)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        total += within - 2 * kernel(xs, ys).mean()
    return float(total / num_subsets)


def extract_features(extractor: FeatureExtractor, images: Tensor | Iterable[Tensor]) -> np.ndarray:
    """Features (N, D) of images in [-1, 1], batch by batch, without gradients."""
    with torch.no_grad():
        parts = [extractor(batch).float().cpu() for batch in _batches(images)]
    if not parts:
        raise InvalidArgument("no images to extract features from")
    return torch.cat(parts).numpy()


def load_inception(path: str | os.PathLike[str], device: str | torch.device) -> FeatureExtractor:
    """A feature extractor from a TorchScript file; never downloads anything.

    NVIDIA's metric network (a ``forward(x, return_features)`` taking uint8 images at any size) is
    called as StyleGAN2-ADA calls it, with the images mapped from [-1, 1] to uint8. Any other
    TorchScript module receives the float images in [-1, 1] and must return (N, D) features.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Inception checkpoint not found: {p} (set by {INCEPTION_ENV})")
    try:
        with warnings.catch_warnings():
            # NVIDIA's network exists only as TorchScript, which torch now marks deprecated.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(p), map_location=device).eval()
    except RuntimeError as exc:
        raise InvalidArgument(
            f"{p} is not a TorchScript archive ({str(exc).splitlines()[0]}); {INCEPTION_ENV} must name a "
            "TorchScript feature network such as NVIDIA's inception-2015-12-05.pt, not a state dict"
        ) from None
    arguments = [a.name for a in module.forward.schema.arguments]

    def nvidia(images: Tensor) -> Tensor:
        pixels = ((images.to(device) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        out: Tensor = module(pixels, return_features=True)
        return out

    def plain(images: Tensor) -> Tensor:
        out: Tensor = module(images.to(device).float())
        return out

    return nvidia if "return_features" in arguments else plain


def inception_from_env(
    device: str | torch.device, environ: Mapping[str, str] | None = None
) -> FeatureExtractor | None:
    """The network ``GANFOLK_TRAIN_INCEPTION_CHECKPOINT`` names, or None when it is unset (skip FID/KID)."""
    path = (os.environ if environ is None else environ).get(INCEPTION_ENV, "").strip()
    return load_inception(path, device) if path else None
