"""Deterministic seed → z mapping for StyleGAN2 sampling.

Each seed owns its own CPU ``torch.Generator().manual_seed(seed)``, so the z of a seed is the
same whatever batch it is drawn in, whichever device the generator runs on, and whichever
process draws it (fan-out over replicas gives identical samples).

Modes (``style_dim`` values per seed, float32):

- ``"normal"``: ``torch.randn(style_dim, generator=gen)`` — standard normal.
- ``"truncated"``: the GANfolk notebooks' z, a standard normal truncated to ``[-bound, bound]``
  (default 0.7), drawn by the inverse-CDF method: ``u = torch.rand(style_dim, float64,
  generator=gen)``, ``z = Φ⁻¹(Φ(-bound) + u · (Φ(bound) - Φ(-bound)))`` computed in float64,
  clamped to ``[-bound, bound]`` and cast to float32. One uniform per element, no rejection
  loop, so it is exactly reproducible. (The notebooks used scipy's ``truncnorm``; the
  distribution is the same, the individual draws are not.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch

__all__ = ["LatentMode", "z_batch", "z_from_seed"]

LatentMode = Literal["normal", "truncated"]
_MAX_SEED = 2**64


def z_from_seed(seed: int, style_dim: int, mode: LatentMode = "normal", bound: float = 0.7) -> torch.Tensor:
    """z of shape (style_dim,), float32 on CPU, determined only by (seed, style_dim, mode, bound)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    if style_dim < 1:
        raise ValueError(f"style_dim must be >= 1, got {style_dim}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if mode == "normal":
        return torch.randn(style_dim, generator=gen, dtype=torch.float32)
    if mode == "truncated":
        if not bound > 0:
            raise ValueError(f"bound must be > 0, got {bound}")
        u = torch.rand(style_dim, generator=gen, dtype=torch.float64)
        lo = torch.special.ndtr(torch.tensor(-bound, dtype=torch.float64))
        z = torch.special.ndtri(lo + u * (1 - 2 * lo))
        return z.clamp(-bound, bound).to(torch.float32)
    raise ValueError(f"mode must be 'normal' or 'truncated', got {mode!r}")


def z_batch(
    seeds: Iterable[int], style_dim: int, mode: LatentMode = "normal", bound: float = 0.7
) -> torch.Tensor:
    """Stack :func:`z_from_seed` for each seed: shape (len(seeds), style_dim), float32 on CPU."""
    zs = [z_from_seed(s, style_dim, mode, bound) for s in seeds]
    return torch.stack(zs) if zs else torch.empty(0, style_dim)
