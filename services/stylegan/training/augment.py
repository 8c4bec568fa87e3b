"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"), the default "bgc" pipeline.

Every image a discriminator sees (reals and fakes alike) goes through :class:`AugmentPipe`.
Each of its transforms is applied to each sample independently with probability ``p``, and
its parameter is then drawn from a fixed distribution (which includes the identity for the
discrete ones). Because ``p < 1`` leaves a non-zero share of images untouched, the
generator cannot learn to produce augmented-looking images ("non-leaking"); ADA keeps ``p``
where the discriminator neither over- nor under-fits with :class:`AdaptiveP`.

Pipeline, in order:

* pixel blitting: x-flip, rotation by a multiple of 90°, integer translation (≤ 12.5 %);
* general geometric: isotropic scale, rotation, anisotropic scale, rotation, fractional
  translation. The two rotations use probability ``1 - sqrt(1 - p)`` each, so that some
  rotation happens with probability ``p``;
* colour: brightness, contrast, luma flip, hue rotation, saturation, as a 4×4 affine map on
  RGB (images in [-1, 1], the luma axis is (1, 1, 1)/√3).

Implementation choices:

* All geometric transforms of a sample are composed into one 3×3 matrix (in pixel units,
  origin at the image centre) mapping output positions to input positions, so an image is
  resampled at most once.
* Resampling is 2× supersampled: the image is upsampled with a 12-tap Kaiser-windowed-sinc
  half-band filter, sampled bilinearly with ``grid_sample`` (reflection padding) on a 2×
  grid, then filtered and decimated by 2 with the same filter. Plain bilinear sampling at
  the output rate would alias under minification and rotation, and the discriminator can
  learn such artefacts; the supersampled chain is the ADA paper's approach (it uses a sym6
  wavelet filter), here with a filter designed in closed form. Reflection padding
  continues the image's content instead of inventing black borders. Every step is linear
  in the pixels, so gradients flow to the input (the generator is trained through it).
* Random parameters are drawn on the CPU (a few numbers per sample), so deciding which
  samples need work never synchronises with an accelerator, and a CPU ``torch.Generator``
  makes a call reproducible. Samples whose transform came out as the identity are passed
  through untouched, so ``p = 0`` is exactly the identity.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from services.stylegan.model import upfirdn2d

__all__ = [
    "BGC",
    "AdaptiveP",
    "AugmentConfig",
    "AugmentPipe",
    "AugmentSpec",
    "AugmentSpecError",
    "build_augment",
    "parse_augment",
]

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
BGC = GEOMETRIC + COLOUR
"""The ADA paper's default set: blitting, general geometric and colour transforms."""


@dataclass(frozen=True)
class AugmentConfig:
    """Which transforms run and how strong they are (defaults: the ADA paper's "bgc").

    Ranges are fractions of the image size for translations, radians/π for rotations and
    standard deviations of log2 factors for scalings, contrast and saturation.
    """

    ops: tuple[str, ...] = BGC
    xint_max: float = 0.125
    scale_std: float = 0.2
    rotate_max: float = 1.0
    aniso_std: float = 0.2
    xfrac_std: float = 0.125
    brightness_std: float = 0.2
    contrast_std: float = 0.5
    hue_max: float = 1.0
    saturation_std: float = 1.0
    filter_taps: int = 12

    def __post_init__(self) -> None:
        unknown = sorted(set(self.ops) - set(BGC))
        if unknown:
            raise ValueError(f"unknown augmentations {unknown}; known: {', '.join(BGC)}")
        object.__setattr__(self, "ops", tuple(self.ops))
        if self.filter_taps < 4 or self.filter_taps % 2:
            raise ValueError(f"filter_taps must be even and >= 4, got {self.filter_taps}")


# ----------------------------------------------------------------------- matrices (batched)


def _eye(n: int, d: int) -> Tensor:
    return torch.eye(d, dtype=torch.float64).repeat(n, 1, 1)


def _translate_inv(tx: Tensor, ty: Tensor) -> Tensor:
    m = _eye(tx.shape[0], 3)
    m[:, 0, 2], m[:, 1, 2] = -tx, -ty
    return m


def _scale_inv(sx: Tensor, sy: Tensor) -> Tensor:
    m = _eye(sx.shape[0], 3)
    m[:, 0, 0], m[:, 1, 1] = 1 / sx, 1 / sy
    return m


def _rotate_inv(theta: Tensor, exact: bool = False) -> Tensor:
    c, s = torch.cos(-theta), torch.sin(-theta)
    if exact:  # multiples of 90°: keep the entries exactly 0 / ±1
        c, s = c.round(), s.round()
    m = _eye(theta.shape[0], 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _embed(m3: Tensor, offset: Tensor | None = None) -> Tensor:
    """(n, 3, 3) linear colour map [+ (n, 3) offset] as (n, 4, 4) homogeneous matrices."""
    m = _eye(m3.shape[0], 4)
    m[:, :3, :3] = m3
    if offset is not None:
        m[:, :3, 3] = offset
    return m


_LUMA = torch.full((3,), 1 / math.sqrt(3), dtype=torch.float64)


def _hue_rotation(theta: Tensor) -> Tensor:
    """Rotation by ``theta`` about the luma axis (Rodrigues' formula)."""
    v = _LUMA
    vv = torch.outer(v, v)
    cross = torch.tensor([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], dtype=torch.float64)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    return c * torch.eye(3, dtype=torch.float64) + s * cross + (1 - c) * vv


# ----------------------------------------------------------------------- resampling


def _halfband(taps: int) -> Tensor:
    """Kaiser-windowed sinc with cutoff at half the Nyquist rate, for 2× resampling."""
    n = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    h = 0.5 * torch.sinc(0.5 * n) * torch.kaiser_window(taps, periodic=False, beta=6.0, dtype=torch.float64)
    return (h / h.sum()).float()


def _symmetric_pad(x: Tensor, m: int) -> Tensor:
    """Mirror ``m`` pixels about each edge, repeating the edge pixel (what ``grid_sample``'s
    reflection does with ``align_corners=False``)."""
    x = torch.cat([x[..., :m].flip(-1), x, x[..., -m:].flip(-1)], -1)
    return torch.cat([x[..., :m, :].flip(-2), x, x[..., -m:, :].flip(-2)], -2)


def _resample(x: Tensor, g_inv: Tensor, taps: Tensor) -> Tensor:
    """Sample ``x`` (n, c, h, w) at ``g_inv`` · (output pixel positions), supersampled 2×."""
    h, w = x.shape[-2:]
    k = taps.numel()
    kernel = torch.outer(taps, taps).to(x.dtype)
    # Upsample from a mirrored margin wide enough for the filter, then crop: the 2× image's
    # borders then agree with grid_sample's reflection of it.
    m = min(k // 4 + 1, h, w)
    p = k - 2
    up = upfirdn2d(_symmetric_pad(x, m), kernel * 4, up=2, pad=(p // 2 + 1, p // 2))
    up = up[:, :, 2 * m : 2 * m + 2 * h, 2 * m : 2 * m + 2 * w]
    # Sample p/2 extra positions per side so the decimation filter needs no padding. The grid
    # is built where the images are: at 512 px it is far bigger than the images themselves.
    q = p // 2
    dev, dt = x.device, x.dtype
    xs = (torch.arange(-q, 2 * w + q, device=dev, dtype=dt) + 0.5) / 2 - w / 2
    ys = (torch.arange(-q, 2 * h + q, device=dev, dtype=dt) + 0.5) / 2 - h / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    pos = torch.stack([xx, yy, torch.ones_like(xx)], -1)
    # align_corners=False: ±1 are the outer pixel edges, i.e. ±w/2 in centred pixel units.
    to_unit = torch.diag(torch.tensor([2 / w, 2 / h], dtype=torch.float64)) @ g_inv[:, :2, :]
    grid = torch.einsum("nij,yxj->nyxi", to_unit.to(device=dev, dtype=dt), pos)
    sampled = F.grid_sample(up, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return upfirdn2d(sampled, kernel, down=2)


def _apply_where(x: Tensor, mats: Tensor, eye: Tensor, fn: Any) -> Tensor:
    """``fn(x[i], mats[i])`` for the samples whose matrix is not the identity; others pass through."""
    todo = (mats - eye).abs().amax((1, 2)) > 1e-12
    if not bool(todo.any()):
        return x
    if bool(todo.all()):
        return fn(x, mats)
    idx = todo.nonzero().squeeze(1)
    return x.index_copy(0, idx.to(x.device), fn(x[idx.to(x.device)], mats[idx]))


def _apply_colour(x: Tensor, c: Tensor) -> Tensor:
    c = c.to(device=x.device, dtype=x.dtype)
    return torch.einsum("nij,njhw->nihw", c[:, :3, :3], x) + c[:, :3, 3, None, None]


# ----------------------------------------------------------------------- the pipeline


class AugmentPipe(nn.Module):
    """ADA augmentation of a batch of images (N, C, H, W) in [-1, 1], differentiable in the images.

    ``p`` is the per-transform probability; set it between steps (e.g. from
    :class:`AdaptiveP`). Colour transforms need C = 3.
    """

    taps: Tensor

    def __init__(self, p: float = 0.0, config: AugmentConfig | None = None) -> None:
        super().__init__()
        self.config = config or AugmentConfig()
        self.p = p
        self.register_buffer("taps", _halfband(self.config.filter_taps), persistent=False)

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"augmentation probability must be in [0, 1], got {value}")
        self._p = float(value)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment ``images``; ``generator`` (a CPU generator) makes the draw reproducible."""
        if images.ndim != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
        if self.p == 0.0:
            return images
        n, c, h, w = images.shape
        g_inv, col = self._draw(n, h, w, generator)
        out = _apply_where(images, g_inv, torch.eye(3, dtype=torch.float64), self._geometric)
        if col is not None:
            if c != 3:
                raise ValueError(f"colour augmentations need RGB images, got {c} channels")
            out = _apply_where(out, col, torch.eye(4, dtype=torch.float64), _apply_colour)
        return out

    def _geometric(self, x: Tensor, g_inv: Tensor) -> Tensor:
        return _resample(x, g_inv, self.taps)

    def _draw(self, n: int, h: int, w: int, gen: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        """Per-sample inverse geometric matrices (n, 3, 3) and colour matrices (n, 4, 4) or None."""
        cfg, p, ops = self.config, self.p, set(self.config.ops)

        def rand(*shape: int) -> Tensor:
            return torch.rand(n, *shape, generator=gen, dtype=torch.float64)

        def randn(*shape: int) -> Tensor:
            return torch.randn(n, *shape, generator=gen, dtype=torch.float64)

        def gate(values: Tensor, neutral: float, prob: float = p) -> Tensor:
            keep = (rand() < prob).view(-1, *([1] * (values.ndim - 1)))
            return torch.where(keep, values, torch.full_like(values, neutral))

        g = _eye(n, 3)
        if "xflip" in ops:
            i = gate(torch.floor(rand() * 2), 0.0)
            g = g @ _scale_inv(1 - 2 * i, torch.ones(n, dtype=torch.float64))
        if "rotate90" in ops:
            i = gate(torch.floor(rand() * 4), 0.0)
            g = g @ _rotate_inv(-math.pi / 2 * i, exact=True)
        if "xint" in ops:
            t = gate((rand(2) * 2 - 1) * cfg.xint_max, 0.0)
            g = g @ _translate_inv(torch.round(t[:, 0] * w), torch.round(t[:, 1] * h))
        # Two rotations at p_rot each give "some rotation" with probability p.
        p_rot = 1 - math.sqrt(1 - p)
        if "scale" in ops:
            s = gate(torch.exp2(randn() * cfg.scale_std), 1.0)
            g = g @ _scale_inv(s, s)
        if "rotate" in ops:
            g = g @ _rotate_inv(gate((rand() * 2 - 1) * math.pi * cfg.rotate_max, 0.0, p_rot))
        if "aniso" in ops:
            s = gate(torch.exp2(randn() * cfg.aniso_std), 1.0)
            g = g @ _scale_inv(s, 1 / s)
        if "rotate" in ops:
            g = g @ _rotate_inv(gate((rand() * 2 - 1) * math.pi * cfg.rotate_max, 0.0, p_rot))
        if "xfrac" in ops:
            t = gate(randn(2) * cfg.xfrac_std, 0.0)
            g = g @ _translate_inv(t[:, 0] * w, t[:, 1] * h)

        if not ops & set(COLOUR):
            return g, None
        eye3 = torch.eye(3, dtype=torch.float64)
        vv = torch.outer(_LUMA, _LUMA)
        col = _eye(n, 4)
        if "brightness" in ops:
            b = gate(randn() * cfg.brightness_std, 0.0)
            col = _embed(eye3.repeat(n, 1, 1), b[:, None].repeat(1, 3)) @ col
        if "contrast" in ops:
            s = gate(torch.exp2(randn() * cfg.contrast_std), 1.0)
            col = _embed(s[:, None, None] * eye3) @ col
        if "lumaflip" in ops:
            i = gate(torch.floor(rand() * 2), 0.0)
            col = _embed(eye3 - 2 * i[:, None, None] * vv) @ col
        if "hue" in ops:
            col = _embed(_hue_rotation(gate((rand() * 2 - 1) * math.pi * cfg.hue_max, 0.0))) @ col
        if "saturation" in ops:
            s = gate(torch.exp2(randn() * cfg.saturation_std), 1.0)
            col = _embed(vv + (eye3 - vv) * s[:, None, None]) @ col
        return g, col

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}, ops={','.join(self.config.ops)}"


# ----------------------------------------------------------------------- adaptive p


class AdaptiveP:
    """ADA's controller of the augmentation probability.

    Feed it the discriminator's logits on real images every step (:meth:`update`). Every
    ``interval`` steps it computes the overfitting heuristic r_t = E[sign(D(real))] over the
    images seen since the last adjustment and moves ``p`` up when r_t > ``target`` (D is
    too sure of the reals) and down otherwise, by (images seen) / (``kimg`` · 1000), so a
    full swing 0 → 1 takes ``kimg`` thousand images; ``p`` stays in [0, 1]. The signs are
    summed on the logits' device and read back once per adjustment.
    """

    def __init__(self, p: float = 0.0, target: float = 0.6, kimg: float = 500.0, interval: int = 4) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if kimg <= 0 or interval < 1:
            raise ValueError(f"kimg must be > 0 and interval >= 1, got {kimg}, {interval}")
        self.p, self.target, self.kimg, self.interval = float(p), float(target), float(kimg), int(interval)
        self.rt: float | None = None  # the last measured statistic, for logging
        self._signs: Tensor | None = None
        self._images = 0
        self._steps = 0

    def update(self, real_pred: Tensor) -> float:
        """Account for one step's ``D(real)`` logits (N, …); return the (possibly new) ``p``."""
        signs = torch.sign(real_pred.detach()).sum()
        self._signs = signs if self._signs is None else self._signs + signs
        self._images += real_pred.shape[0]
        self._steps += 1
        if self._steps >= self.interval:
            self._adjust()
        return self.p

    def _adjust(self) -> None:
        assert self._signs is not None
        self.rt = float(self._signs.item()) / self._images
        direction = (self.rt > self.target) - (self.rt < self.target)
        self.p = min(max(self.p + direction * self._images / (self.kimg * 1000), 0.0), 1.0)
        self._signs, self._images, self._steps = None, 0, 0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: ``p`` (rosinality's ``ada_aug_p``) and the settings."""
        return {"p": self.p, "target": self.target, "kimg": self.kimg, "interval": self.interval}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (only ``p`` is required); pending statistics are dropped."""
        p = float(state["p"])
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.target = float(state.get("target", self.target))
        self.kimg = float(state.get("kimg", self.kimg))
        self.interval = int(state.get("interval", self.interval))
        self._signs, self._images, self._steps = None, 0, 0


# ----------------------------------------------------------------------- --aug none|ada|fixed:P


class AugmentSpecError(ValueError, argparse.ArgumentTypeError):
    """A bad ``--aug`` value; an ``ArgumentTypeError`` too, so argparse prints the message."""


@dataclass(frozen=True)
class AugmentSpec:
    """How a training run augments: ``none``, ``ada`` (adaptive p from ``p``) or ``fixed`` at ``p``."""

    mode: Literal["none", "ada", "fixed"]
    p: float = 0.0

    def __str__(self) -> str:
        return f"fixed:{self.p:g}" if self.mode == "fixed" else self.mode


def parse_augment(text: str) -> AugmentSpec:
    """Parse ``none``, ``ada`` or ``fixed:P`` (0 ≤ P ≤ 1); usable as an argparse ``type``."""
    value = text.strip().lower()
    if value == "none":
        return AugmentSpec("none")
    if value == "ada":
        return AugmentSpec("ada")
    if value.startswith("fixed:"):
        raw = value.removeprefix("fixed:")
        try:
            p = float(raw)
        except ValueError:
            p = math.nan
        if not 0.0 <= p <= 1.0:  # also rejects nan
            raise AugmentSpecError(f"--aug fixed:P needs a probability 0 <= P <= 1, got {raw!r}")
        return AugmentSpec("fixed", p)
    raise AugmentSpecError(f"--aug must be 'none', 'ada' or 'fixed:P' (e.g. fixed:0.3), got {text!r}")


def build_augment(
    spec: AugmentSpec | str,
    config: AugmentConfig | None = None,
    *,
    target: float = 0.6,
    kimg: float = 500.0,
    interval: int = 4,
) -> tuple[AugmentPipe, AdaptiveP | None]:
    """The pipe for ``spec`` and, for ``ada``, the controller that should drive its ``p``."""
    spec = parse_augment(spec) if isinstance(spec, str) else spec
    if spec.mode == "ada":
        ada = AdaptiveP(spec.p, target=target, kimg=kimg, interval=interval)
        return AugmentPipe(ada.p, config), ada
    return AugmentPipe(spec.p if spec.mode == "fixed" else 0.0, config), None
