"""The cutout augmentations of the GANfolk VQGAN+CLIP notebook, in pure torch.

The notebook runs ``kornia.augmentation``::

    RandomHorizontalFlip(p=0.5), RandomSharpness(0.3, p=0.4),
    RandomAffine(degrees=30, translate=0.1, p=0.8, padding_mode="border"),
    RandomPerspective(0.2, p=0.4), ColorJitter(hue=0.01, saturation=0.01, p=0.7)

then adds Gaussian noise with a per-cutout strength drawn from ``U(0, noise_factor)``. This module
reproduces those transforms with torch ops only (``conv2d``, ``affine_grid``, ``grid_sample``), so no
kornia or torchvision is needed and every step stays differentiable (the gradient reaches the
VQGAN latent through them). Each transform is applied per cutout with its probability.

Randomness comes only from the ``torch.Generator`` passed in (a CPU generator; parameters are drawn
on the CPU and moved, noise uses a device generator seeded from it), so a fixed seed gives the same
cutouts on every run.

Differences from kornia, on purpose: the hue shift is a rotation of the chroma plane in YIQ space
(for the ±0.01-turn shifts of the notebook it matches an HSV hue shift to within rounding), and the
colour-jitter order is fixed (saturation, then hue) instead of random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AugmentParams", "augment"]


@dataclass(frozen=True)
class AugmentParams:
    """Augmentation strengths and probabilities; the defaults are the GANfolk notebook's."""

    hflip_p: float = 0.5
    sharpness: float = 0.3
    sharpness_p: float = 0.4
    affine_degrees: float = 30.0
    affine_translate: float = 0.1
    affine_p: float = 0.8
    perspective_distortion: float = 0.2
    perspective_p: float = 0.4
    jitter_hue: float = 0.01
    jitter_saturation: float = 0.01
    jitter_p: float = 0.7
    noise_factor: float = 0.1
    enabled: bool = True

    def validate(self) -> None:
        """ValueError naming the field when a value is out of range."""
        for name in ("hflip_p", "sharpness_p", "affine_p", "perspective_p", "jitter_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augmentations.{name} is a probability in [0, 1], got {value}")
        limits = {
            "sharpness": 10.0,
            "affine_degrees": 180.0,
            "affine_translate": 1.0,
            "perspective_distortion": 1.0,
            "jitter_hue": 0.5,
            "jitter_saturation": 1.0,
            "noise_factor": 10.0,
        }
        for name, hi in limits.items():
            value = getattr(self, name)
            if not 0.0 <= value <= hi:
                raise ValueError(f"augmentations.{name} must be in [0, {hi:g}], got {value}")


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64) * (hi - lo) + lo


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask.to(a.device).view(-1, 1, 1, 1), a, b)


def hflip(x: Tensor, p: float, gen: torch.Generator) -> Tensor:
    mask = torch.rand(x.shape[0], generator=gen) < p
    return _where(mask, x.flip(-1), x)


def sharpness(x: Tensor, strength: float, p: float, gen: torch.Generator) -> Tensor:
    """kornia's ``sharpness``: blend the 3x3-smoothed image (borders kept) towards the original by a
    factor drawn from U(0, strength); 0 gives the smoothed image, 1 the original."""
    n, c = x.shape[:2]
    mask = torch.rand(n, generator=gen) < p
    factor = _uniform(gen, n, 0.0, strength).to(x)
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=x.dtype, device=x.device)
    kernel = (kernel / 13.0).view(1, 1, 3, 3).repeat(c, 1, 1, 1)
    degenerate = F.conv2d(x, kernel, groups=c).clamp(0.0, 1.0)
    blurred = x.clone()
    blurred[..., 1:-1, 1:-1] = degenerate
    out = blurred + (x - blurred) * factor.view(-1, 1, 1, 1)
    return _where(mask, out, x)


def affine(x: Tensor, degrees: float, translate: float, p: float, gen: torch.Generator) -> Tensor:
    """Rotation by U(-degrees, degrees) about the centre and a shift of up to ``translate`` of the
    side, bilinear, border padding (the notebook's ``padding_mode="border"``)."""
    n = x.shape[0]
    mask = torch.rand(n, generator=gen) < p
    angle = _uniform(gen, n, -degrees, degrees) * math.pi / 180.0
    # Shift in normalised coordinates ([-1, 1] spans the side, so a fraction t of the side is 2t).
    tx = _uniform(gen, n, -translate, translate) * 2.0
    ty = _uniform(gen, n, -translate, translate) * 2.0
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid maps output -> input coordinates: the inverse of p' = R p + t is R^T (p' - t).
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, sin
    theta[:, 1, 0], theta[:, 1, 1] = -sin, cos
    theta[:, 0, 2] = -(cos * tx + sin * ty)
    theta[:, 1, 2] = -(-sin * tx + cos * ty)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _where(mask, out, x)


def _homography(src: Tensor, dst: Tensor) -> Tensor:
    """(N, 3, 3) matrices mapping each of the 4 ``src`` points (N, 4, 2) onto ``dst``."""
    n = src.shape[0]
    a = torch.zeros(n, 8, 8, dtype=torch.float64)
    b = torch.zeros(n, 8, dtype=torch.float64)
    for k in range(4):
        x, y = src[:, k, 0], src[:, k, 1]
        u, v = dst[:, k, 0], dst[:, k, 1]
        a[:, 2 * k, 0], a[:, 2 * k, 1], a[:, 2 * k, 2] = x, y, 1.0
        a[:, 2 * k, 6], a[:, 2 * k, 7] = -u * x, -u * y
        a[:, 2 * k + 1, 3], a[:, 2 * k + 1, 4], a[:, 2 * k + 1, 5] = x, y, 1.0
        a[:, 2 * k + 1, 6], a[:, 2 * k + 1, 7] = -v * x, -v * y
        b[:, 2 * k], b[:, 2 * k + 1] = u, v
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones(n, 1, dtype=torch.float64)], dim=1).view(n, 3, 3)


def perspective(x: Tensor, distortion: float, p: float, gen: torch.Generator) -> Tensor:
    """kornia's ``RandomPerspective``: each corner moves inwards by up to ``distortion`` × half the
    side; the image is warped so the corners land there (bilinear, zeros outside)."""
    n, _, h, w = x.shape
    mask = torch.rand(n, generator=gen) < p
    corners = [[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]]
    start = torch.tensor(corners, dtype=torch.float64)
    inward = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=torch.float64)
    factor = torch.tensor([distortion * w / 2.0, distortion * h / 2.0], dtype=torch.float64)
    rand = torch.rand(n, 4, 2, generator=gen, dtype=torch.float64)
    end = start + factor * rand * inward
    # Output pixel -> input pixel: the homography taking the moved corners back to the originals.
    back = _homography(end, start.expand(n, 4, 2)).to(x)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=x.dtype, device=x.device),
        torch.arange(w, dtype=x.dtype, device=x.device),
        indexing="ij",
    )
    pts = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(1, -1, 3)
    mapped = pts @ back.transpose(1, 2)
    xy = mapped[..., :2] / mapped[..., 2:3]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=x.dtype, device=x.device)
    grid = (xy * scale - 1.0).view(n, h, w, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return _where(mask, out, x)


_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)


def color_jitter(x: Tensor, hue: float, saturation: float, p: float, gen: torch.Generator) -> Tensor:
    """Saturation × U(1-s, 1+s) (blend with the luma), then a hue shift of U(-hue, hue) turns."""
    n = x.shape[0]
    mask = torch.rand(n, generator=gen) < p
    sat = _uniform(gen, n, max(0.0, 1.0 - saturation), 1.0 + saturation)
    turn = _uniform(gen, n, -hue, hue) * 2.0 * math.pi
    gray = (x[:, 0] * 0.299 + x[:, 1] * 0.587 + x[:, 2] * 0.114).unsqueeze(1)
    out = (gray + (x - gray) * sat.to(x).view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    cos, sin = torch.cos(turn), torch.sin(turn)
    rot = torch.zeros(n, 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    # RGB -> YIQ, rotate the IQ (chroma) plane, back to RGB: one 3x3 matrix per cutout.
    m = torch.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ
    out = torch.einsum("nij,njhw->nihw", m.to(x), out).clamp(0.0, 1.0)
    return _where(mask, out, x)


def add_noise(x: Tensor, factor: float, gen: torch.Generator) -> Tensor:
    """Gaussian noise, strength U(0, factor) per cutout (the notebook's ``noise_fac``)."""
    n = x.shape[0]
    facs = _uniform(gen, n, 0.0, factor).to(x).view(-1, 1, 1, 1)
    if x.device.type == "cpu":
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen).item())
        dev_gen = torch.Generator(device=x.device).manual_seed(seed)
        noise = torch.randn(x.shape, generator=dev_gen, dtype=x.dtype, device=x.device)
    return x + facs * noise


def augment(x: Tensor, params: AugmentParams, gen: torch.Generator) -> Tensor:
    """Augment a batch of cutouts (N, 3, H, W) in [0, 1]; differentiable w.r.t. ``x``.

    The random draws happen in a fixed order whatever the probabilities, so changing one
    probability does not reshuffle the others' draws.
    """
    if not params.enabled:
        return x
    x = hflip(x, params.hflip_p, gen)
    x = sharpness(x, params.sharpness, params.sharpness_p, gen)
    x = affine(x, params.affine_degrees, params.affine_translate, params.affine_p, gen)
    x = perspective(x, params.perspective_distortion, params.perspective_p, gen)
    x = color_jitter(x, params.jitter_hue, params.jitter_saturation, params.jitter_p, gen)
    if params.noise_factor > 0:
        x = add_noise(x, params.noise_factor, gen)
    return x
