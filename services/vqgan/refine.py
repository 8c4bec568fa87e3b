"""VQGAN+CLIP refinement (Crowson's method), as the GANfolk notebook runs it. No gRPC or NATS here.

One refinement:

1. encode the init image (or draw random codes) to the VQGAN latent ``z``; Adam on ``z``;
2. each iteration: quantise ``z`` straight-through against the codebook, decode, clamp to [0, 1]
   (gradient kept), cut ``cutn`` random squares (side ``rand**cut_pow`` between the CLIP input size
   and the image side), resize them to the CLIP input size, augment them, embed them with CLIP;
3. loss = Σ_prompts |w| · mean(sign(w) · spherical_distance(cutout, prompt)) (+ ``init_weight`` ·
   MSE(z, z₀) / 2); step; clamp ``z`` into the codebook's per-channel range.

Iteration ``i`` (0-based) reports the loss of the latent before its step; snapshot ``i`` is the image
that loss was computed on, so with 50 iterations and ``snapshot_every=25`` the snapshots are
iterations 0 and 25 and the final image is iteration 50 -- the article's 0/25/50.

Every random draw comes from one ``torch.Generator`` seeded with ``params.seed``: on CPU a seed gives
the same images bit for bit. ``should_stop`` is polled before every iteration (cancellation stops
within one iteration); :func:`check_memory` rejects requests that would not fit before any work.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ganfolk.runtime.errors import ResourceExhausted
from services.clip.loader import LoadedClip, image_size_of
from services.vqgan.augment import AugmentParams, augment
from services.vqgan.model import VQGAN, clamp_with_grad, vector_quantize_st

__all__ = [
    "MemoryEstimate",
    "Progress",
    "Prompt",
    "RefineParams",
    "RefineResult",
    "RefineStopped",
    "check_memory",
    "downsampling_factor",
    "estimate_memory",
    "make_cutouts",
    "refine",
    "spherical_distance",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class RefineParams:
    """Knobs of one refinement; the defaults are the GANfolk notebook's."""

    size: int = 512
    step_size: float = 0.01
    iterations: int = 50
    cutn: int = 64
    cut_pow: float = 1.0
    init_weight: float = 0.0
    seed: int = 0
    # Snapshot every k iterations (0: none, only the final image).
    snapshot_every: int = 0
    augment: AugmentParams = field(default_factory=AugmentParams)


@dataclass
class Progress:
    iteration: int
    total: int
    loss: float
    # H x W x 3 uint8 on snapshot iterations.
    snapshot: np.ndarray | None = None


@dataclass
class RefineResult:
    image: np.ndarray  # H x W x 3 uint8
    losses: list[float]
    iterations: int


class RefineStopped(Exception):
    """``should_stop`` returned True; the loop ended before ``iteration``."""

    def __init__(self, iteration: int) -> None:
        super().__init__(f"refinement stopped before iteration {iteration}")
        self.iteration = iteration


def downsampling_factor(vqgan: VQGAN) -> int:
    return int(2 ** (len(vqgan.config.ch_mult) - 1))


# --------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    decoder_bytes: int
    clip_bytes: int
    fixed_bytes: int

    @property
    def total(self) -> int:
        return self.decoder_bytes + self.clip_bytes + self.fixed_bytes


def _clip_bytes_per_cutout(clip: LoadedClip) -> int:
    """Activations one cutout keeps for the backward pass through CLIP's image tower (heuristic)."""
    h, w = image_size_of(clip.preprocess_cfg)
    elem = torch.finfo(clip.dtype).bits // 8
    visual = getattr(clip.model, "visual", None)
    transformer = getattr(visual, "transformer", None)
    if transformer is not None and hasattr(transformer, "width"):
        grid = getattr(visual, "grid_size", (h // 16, w // 16))
        tokens = int(grid[0]) * int(grid[1]) + 1
        width = int(transformer.width)
        layers = len(getattr(transformer, "resblocks", [])) or 12
        heads = max(width // 64, 1)
        # ~16 token-width tensors per block (norms, qkv, mlp at 4x width) + the attention maps.
        per_layer = tokens * width * 16 * elem + 3 * heads * tokens * tokens * elem
        return int(layers * per_layer + h * w * 3 * 4 * 4)
    # ResNet towers: about 40 full-resolution 64-channel maps' worth of activations.
    return int(h * w * 64 * 40 * elem)


def estimate_memory(vqgan: VQGAN, clip: LoadedClip, size: int, cutn: int) -> MemoryEstimate:
    """Peak memory of one iteration, forward + backward (a rough, deliberately generous estimate).

    The decoder keeps about eight activation maps per residual block at every level; CLIP keeps the
    activations of ``cutn`` cutouts. Weights and optimiser state are counted in ``fixed_bytes``.
    """
    cfg = vqgan.config
    levels = len(cfg.ch_mult)
    decoder = 0
    for i, mult in enumerate(cfg.ch_mult):
        side = size // (2 ** (levels - 1 - i))
        decoder += side * side * cfg.ch * mult * (cfg.num_res_blocks + 1) * 8 * 4
    latent_side = size // (2 ** (levels - 1))
    decoder += 3 * (latent_side * latent_side) ** 2 * 4  # attention maps at the latent resolution
    decoder += size * size * 3 * 4 * 8  # the image, clamps, cutout crops
    weights = sum(p.numel() * p.element_size() for p in vqgan.parameters())
    weights += sum(p.numel() * p.element_size() for p in clip.model.parameters())
    return MemoryEstimate(int(decoder), int(cutn * _clip_bytes_per_cutout(clip)), int(weights))


def check_memory(
    vqgan: VQGAN, clip: LoadedClip, size: int, cutn: int, budget_bytes: float, factor: int | None = None
) -> MemoryEstimate:
    """ResourceExhausted, saying whether to lower ``cutn`` or ``size`` and to what, when the estimate of
    a refinement at ``size`` px with ``cutn`` cutouts is over ``budget_bytes``."""
    est = estimate_memory(vqgan, clip, size, cutn)
    if est.total <= budget_bytes:
        return est
    factor = factor or downsampling_factor(vqgan)
    mib = 1 << 20
    per_cut = est.clip_bytes / max(cutn, 1)
    fit_cutn = int((budget_bytes - est.decoder_bytes - est.fixed_bytes) // per_cut) if per_cut else 0
    fit_size = 0
    s = size - factor
    while s >= factor:
        if estimate_memory(vqgan, clip, s, cutn).total <= budget_bytes:
            fit_size = s
            break
        s -= factor
    biggest = "cutn" if est.clip_bytes >= est.decoder_bytes else "size"
    hints = {}
    if fit_cutn >= 1:
        hints["cutn"] = f"lower cutn to {fit_cutn} or less"
    if fit_size:
        hints["size"] = f"lower size to {fit_size} px or less"
    order = sorted(hints, key=lambda k: k != biggest)  # the knob that costs the most first
    advice = " or ".join(hints[k] for k in order) or "lower both cutn and size"
    raise ResourceExhausted(
        f"refining at size {size} px with cutn {cutn} needs an estimated {est.total / mib:,.0f} MiB "
        f"(decoder {est.decoder_bytes / mib:,.0f} MiB, CLIP on {cutn} cutouts "
        f"{est.clip_bytes / mib:,.0f} MiB, weights {est.fixed_bytes / mib:,.0f} MiB), over this replica's "
        f"budget of {budget_bytes / mib:,.0f} MiB "
        f"(GANFOLK_VQGAN_MEMORY_BUDGET_MB); {advice}"
    )


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def spherical_distance(x: Tensor, y: Tensor) -> Tensor:
    """Squared great-circle distance between the normalised rows: (N, D) × (M, D) -> (N, M)."""
    x = F.normalize(x, dim=-1).unsqueeze(1)
    y = F.normalize(y, dim=-1).unsqueeze(0)
    return (x - y).norm(dim=-1).div(2).clamp(max=1.0).arcsin().pow(2).mul(2)


def make_cutouts(
    image: Tensor, cut_size: tuple[int, int], cutn: int, cut_pow: float, gen: torch.Generator
) -> Tensor:
    """``cutn`` random squares of ``image`` (1, 3, H, W), side ``rand**cut_pow`` between the CLIP input
    size and the shorter image side, each resized to ``cut_size`` (bicubic, antialiased)."""
    side_y, side_x = image.shape[2:4]
    max_size = min(side_x, side_y)
    min_size = min(side_x, side_y, max(cut_size))
    cutouts = []
    for _ in range(cutn):
        r = float(torch.rand((), generator=gen, dtype=torch.float64))
        size = int(r**cut_pow * (max_size - min_size) + min_size)
        ox = int(torch.randint(0, side_x - size + 1, (), generator=gen))
        oy = int(torch.randint(0, side_y - size + 1, (), generator=gen))
        cut = image[:, :, oy : oy + size, ox : ox + size]
        if (size, size) != tuple(cut_size):
            cut = F.interpolate(
                cut, size=cut_size, mode="bicubic", align_corners=False, antialias=size > min(cut_size)
            )
        cutouts.append(cut)
    return torch.cat(cutouts, dim=0)


def _to_uint8(image: Tensor) -> np.ndarray:
    return (image[0].detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def image_to_tensor(img: Image.Image, size: int) -> Tensor:
    """Centre-crop to a square and resize to ``size`` × ``size`` (Lanczos); (1, 3, size, size) in [0, 1]."""
    img = img.convert("RGB")
    w, h = img.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


@torch.no_grad()
def embed_prompts(clip: LoadedClip, prompts: Sequence[Prompt]) -> Tensor:
    tokens = clip.tokenizer([p.text for p in prompts]).to(clip.device)
    return clip.model.encode_text(tokens).float()  # type: ignore[operator]


def refine(
    vqgan: VQGAN,
    clip: LoadedClip,
    init_image: Image.Image | None,
    prompts: Sequence[Prompt],
    params: RefineParams,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | torch.device = "cpu",
) -> RefineResult:
    """Run the optimisation; see the module docstring. Raises :class:`RefineStopped` when stopped."""
    if not prompts:
        raise ValueError("no prompts: add at least one prompt")
    if params.iterations < 1:
        raise ValueError("iterations must be at least 1")
    factor = downsampling_factor(vqgan)
    if params.size % factor:
        raise ValueError(f"size {params.size} is not a multiple of the VQGAN downsampling factor {factor}")
    gen = torch.Generator().manual_seed(int(params.seed) % (2**63))
    codebook = vqgan.quantize.embedding.weight
    z_min = codebook.min(dim=0).values.view(1, -1, 1, 1)
    z_max = codebook.max(dim=0).values.view(1, -1, 1, 1)
    if init_image is not None:
        x = image_to_tensor(init_image, params.size).to(device)
        with torch.no_grad():
            z0, _, _ = vqgan.encode(x * 2.0 - 1.0)
    else:
        side = params.size // factor
        idx = torch.randint(0, codebook.shape[0], (side * side,), generator=gen).to(codebook.device)
        z0 = codebook[idx].view(1, side, side, -1).permute(0, 3, 1, 2)
    z0 = z0.detach().float()
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=params.step_size)

    cut_size = image_size_of(clip.preprocess_cfg)
    mean = torch.tensor(clip.preprocess_cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(clip.preprocess_cfg["std"], device=device).view(1, 3, 1, 1)
    text = embed_prompts(clip, prompts)
    weights = torch.tensor([p.weight for p in prompts], device=device)

    def synth(latent: Tensor) -> Tensor:
        zq = vector_quantize_st(latent, codebook, dim=1)
        return clamp_with_grad(vqgan.decode(zq).add(1).div(2), 0.0, 1.0)

    losses: list[float] = []
    for i in range(params.iterations):
        if should_stop is not None and should_stop():
            raise RefineStopped(i)
        opt.zero_grad(set_to_none=True)
        out = synth(z)
        cutouts = augment(make_cutouts(out, cut_size, params.cutn, params.cut_pow, gen), params.augment, gen)
        emb = clip.model.encode_image(((cutouts - mean) / std).to(clip.dtype)).float()  # type: ignore[operator]
        dists = spherical_distance(emb, text)  # (cutn, prompts)
        loss = (weights.abs() * (dists * weights.sign()).mean(dim=0)).sum()
        if params.init_weight:
            loss = loss + F.mse_loss(z, z0) * params.init_weight / 2
        snapshot = _to_uint8(out) if params.snapshot_every and i % params.snapshot_every == 0 else None
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        with torch.no_grad():
            z.copy_(z.maximum(z_min).minimum(z_max))
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at iteration {i}; lower step_size")
        losses.append(value)
        if on_progress is not None:
            on_progress(Progress(i, params.iterations, value, snapshot))
    with torch.no_grad():
        final = _to_uint8(synth(z))
    return RefineResult(final, losses, params.iterations)
