"""Pure-PyTorch VQGAN that loads CompVis/taming-transformers checkpoints.

The module tree and state-dict key names follow taming's ``VQModel`` (``encoder``, ``decoder``,
``quantize.embedding``, ``quant_conv``, ``post_quant_conv``) so published ``.ckpt`` + ``.yaml`` pairs
load with ``strict=True``. The architecture is described by :class:`VQGANConfig`; nothing is compiled or
moved to a device at import time.

Also here: the straight-through helpers a VQGAN+CLIP refinement loop needs (:func:`replace_grad`,
:func:`clamp_with_grad`, :func:`vector_quantize_st`).
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from ganfolk.runtime.hashing import file_sha256

__all__ = [
    "VQGAN",
    "VQGANConfig",
    "VectorQuantizer",
    "build_vqgan",
    "clamp_with_grad",
    "load_vqgan",
    "replace_grad",
    "vector_quantize_st",
]

# Top-level modules of taming's VQModel that hold weights; everything else in a checkpoint
# (``loss.*`` from the discriminator/LPIPS, Lightning extras) is dropped on load.
_MODEL_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VQGANConfig:
    """Architecture of a taming ``VQModel`` (``model.params`` + ``ddconfig`` of its yaml)."""

    embed_dim: int
    n_embed: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    resolution: int
    z_channels: int
    in_channels: int = 3
    out_ch: int = 3
    double_z: bool = False
    dropout: float = 0.0
    beta: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        if not self.ch_mult:
            raise ValueError("VQGANConfig.ch_mult must not be empty")
        for name in ("embed_dim", "n_embed", "ch", "num_res_blocks", "resolution", "z_channels"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"VQGANConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.double_z:
            # taming's VQModel feeds z_channels (not 2*z_channels) into quant_conv.
            raise ValueError("VQGANConfig.double_z=True is not a VQModel configuration")
        widths = {self.ch * m for m in self.ch_mult}
        if any(w % 32 for w in widths):
            raise ValueError(f"channel widths {sorted(widths)} must be multiples of 32 (GroupNorm(32, ·))")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> VQGANConfig:
        """From a taming ``model.params`` mapping (``embed_dim``, ``n_embed``, ``ddconfig``)."""
        if params.get("remap") is not None:
            raise ValueError("index remapping (params.remap) is not supported")
        dd = dict(params.get("ddconfig") or {})
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in dd.items() if k in known}
        try:
            return cls(embed_dim=params["embed_dim"], n_embed=params["n_embed"], **kwargs)
        except (KeyError, TypeError) as e:
            raise ValueError(f"incomplete VQGAN config: {e}") from e

    @classmethod
    def from_yaml(cls, path: str | Path) -> VQGANConfig:
        """Read taming's yaml (``model.params.embed_dim``, ``n_embed``, ``ddconfig.*``); ``lossconfig``
        is ignored."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"VQGAN config not found: {path}")
        with path.open() as f:
            doc = yaml.safe_load(f)
        model = doc.get("model", doc) if isinstance(doc, dict) else None
        if not isinstance(model, dict) or not isinstance(model.get("params"), dict):
            raise ValueError(f"{path}: expected a taming config with model.params")
        target = str(model.get("target", "taming.models.vqgan.VQModel"))
        if target.rsplit(".", 1)[-1] != "VQModel":
            raise ValueError(f"{path}: unsupported model target {target!r} (only VQModel)")
        return cls.from_dict(model["params"])


# --------------------------------------------------------------------------------------------------
# Building blocks (taming/modules/diffusionmodules/model.py layout)
# --------------------------------------------------------------------------------------------------


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if stride == 1 else 0)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), _conv(cin, cout)
        self.norm2, self.dropout, self.conv2 = _norm(cout), nn.Dropout(dropout), _conv(cout, cout)
        self.nin_shortcut = _conv(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 q/k/v/proj convs."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (_conv(c, c, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(b, 1, c, hh * ww).transpose(2, 3) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, hh, ww))


class Downsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = _conv(c, c, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, as taming


class Upsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = _conv(c, c)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``block.*`` (each followed by ``attn.*`` when present), then the optional
    ``downsample``/``upsample`` registered after construction (so key order matches taming)."""

    def __init__(self, cin: int, cout: int, n_blocks: int, attn: bool, dropout: float) -> None:
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(cin if j == 0 else cout, cout, dropout) for j in range(n_blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(cout) for _ in range(n_blocks if attn else 0))

    def forward(self, h: Tensor) -> Tensor:
        for i, blk in enumerate(self.block):
            h = blk(h)
            if len(self.attn):
                h = self.attn[i](h)
        for name in ("downsample", "upsample"):
            resample = self._modules.get(name)
            if resample is not None:
                h = resample(h)
        return h


class _Mid(nn.Module):
    def __init__(self, c: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(c, c, dropout)
        self.attn_1 = AttnBlock(c)
        self.block_2 = ResnetBlock(c, c, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        ch, mult, res = cfg.ch, cfg.ch_mult, cfg.resolution
        self.conv_in = _conv(cfg.in_channels, ch)
        self.down = nn.ModuleList()
        cin = ch
        for i, m in enumerate(mult):
            cout = ch * m
            level = _Level(cin, cout, cfg.num_res_blocks, res in cfg.attn_resolutions, cfg.dropout)
            if i != len(mult) - 1:
                level.downsample = Downsample(cout)
                res //= 2
            self.down.append(level)
            cin = cout
        self.mid = _Mid(cin, cfg.dropout)
        self.norm_out = _norm(cin)
        self.conv_out = _conv(cin, cfg.z_channels)  # double_z is rejected by VQGANConfig

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        cin = ch * mult[-1]
        res = cfg.resolution // 2 ** (len(mult) - 1)
        self.conv_in = _conv(cfg.z_channels, cin)
        self.mid = _Mid(cin, cfg.dropout)
        levels: list[_Level] = []
        for i in reversed(range(len(mult))):
            cout = ch * mult[i]
            level = _Level(cin, cout, cfg.num_res_blocks + 1, res in cfg.attn_resolutions, cfg.dropout)
            if i != 0:
                level.upsample = Upsample(cout)
                res *= 2
            levels.insert(0, level)
            cin = cout
        self.up = nn.ModuleList(levels)  # up.0 is the finest level, as in taming
        self.norm_out = _norm(cin)
        self.conv_out = _conv(cin, cfg.out_ch)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# --------------------------------------------------------------------------------------------------
# Quantizer (taming's VectorQuantizer2, legacy loss, no remap, flat indices)
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def _nearest_code(flat: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codebook row for each row of ``flat`` (same formula as taming, so ties and
    rounding pick the same code)."""
    d = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.t()
    return d.argmin(1)


class VectorQuantizer(nn.Module):
    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_e, e_dim, beta
        self.embedding = nn.Embedding(n_e, e_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_e, 1.0 / n_e)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, tuple[None, None, Tensor]]:
        """``z`` (B, C, H, W) -> ``(z_q, loss, (perplexity=None, min_encodings=None, indices))`` with
        ``indices`` flattened to (B*H*W,) in (b, h, w) order and a straight-through ``z_q``."""
        zl = z.permute(0, 2, 3, 1).contiguous()
        idx = _nearest_code(zl.view(-1, self.e_dim), self.embedding.weight)
        zq = self.embedding(idx).view(zl.shape)
        # legacy (buggy-beta) form: the commitment term gets weight 1, the codebook term beta.
        loss = torch.mean((zq.detach() - zl) ** 2) + self.beta * torch.mean((zq - zl.detach()) ** 2)
        zq = zl + (zq - zl).detach()
        return zq.permute(0, 3, 1, 2).contiguous(), loss, (None, None, idx)

    def get_codebook_entry(self, indices: Tensor, shape: Sequence[int] | None) -> Tensor:
        """Codebook rows for ``indices``; with ``shape`` = (B, H, W, C) returned as (B, C, H, W)."""
        zq = self.embedding(indices.reshape(-1))
        if shape is None:
            return zq
        return zq.view(*shape).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


class VQGAN(nn.Module):
    """taming ``VQModel`` without the training loss: ``encode``/``decode``/``decode_code``."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim, cfg.beta)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[None, None, Tensor]]:
        """Image in [-1, 1], (B, in_channels, H, W) -> ``(quant, emb_loss, info)``."""
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode(self, quant: Tensor) -> Tensor:
        """(B, embed_dim, h, w) latent -> image, (B, out_ch, 16h, 16w) for f16 models, roughly [-1, 1]."""
        return self.decoder(self.post_quant_conv(quant))

    def decode_code(self, indices: Tensor, shape: Sequence[int]) -> Tensor:
        """Decode code indices; ``shape`` = (B, h, w) or (B, h, w, embed_dim)."""
        shp = (*shape[:3], self.config.embed_dim)
        return self.decode(self.quantize.get_codebook_entry(indices, shp))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        quant, diff, _ = self.encode(x)
        return self.decode(quant), diff


def build_vqgan(cfg: VQGANConfig) -> VQGAN:
    """A randomly initialised VQGAN for ``cfg`` (on the current default device)."""
    return VQGAN(cfg)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


class _MissingGlobal:
    """Stand-in for a class whose module is not importable here (e.g. pytorch_lightning callbacks
    referenced by a Lightning checkpoint). Keeps whatever state pickle hands it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_MissingGlobal,), {"__module__": module})


_tolerant_pickle = types.ModuleType("_vqgan_tolerant_pickle")
_tolerant_pickle.Unpickler = _TolerantUnpickler  # type: ignore[attr-defined]
_tolerant_pickle.load = pickle.load  # type: ignore[attr-defined]


def _read_checkpoint(path: Path, trusted: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trusted:
            raise ValueError(
                f"{path} holds Python objects besides tensors (a Lightning checkpoint?) and cannot be "
                "loaded with weights_only=True; pass its sha256 to trust and fully unpickle it"
            ) from e
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_tolerant_pickle)


def _model_state(obj: Any, path: Path) -> dict[str, Tensor]:
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path}: no state dict found (expected a mapping or {{'state_dict': ...}})")
    return {k: v for k, v in sd.items() if k.startswith(_MODEL_PREFIXES) and isinstance(v, Tensor)}


def _check_state(model: nn.Module, sd: Mapping[str, Tensor], cfg: VQGANConfig, path: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [
        f"{k}: {tuple(sd[k].shape)} vs {s}"
        for k, s in expected.items()
        if k in sd and tuple(sd[k].shape) != s
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label} {len(items)}: {items[:5]}{more}")
        raise ValueError(
            f"checkpoint {path} does not match the VQGAN config: "
            + "; ".join(parts)
            + f". Config used: {asdict(cfg)}"
        )


def load_vqgan(
    ckpt_path: str | Path,
    config_path: str | Path,
    device: str | torch.device = "cpu",
    sha256: str | None = None,
) -> VQGAN:
    """Load a taming-transformers VQGAN (``.ckpt`` + ``.yaml``) into a :class:`VQGAN`.

    Args:
        ckpt_path: ``{"state_dict": ...}`` (Lightning checkpoint) or a bare state dict. ``loss.*`` and
            any other non-model entries are dropped; the model keys must match the config exactly.
        config_path: taming yaml with ``model.params.{embed_dim, n_embed, ddconfig}``.
        device: where the returned module lives.
        sha256: expected hex digest of the checkpoint file. When given and it matches, a checkpoint that
            holds arbitrary Python objects (Lightning callbacks etc.) is fully unpickled; without it only
            ``weights_only`` loading is attempted.

    Returns:
        The model in eval mode with parameters frozen (``requires_grad=False``), float32, on ``device``.

    Raises:
        FileNotFoundError: the checkpoint or the yaml is missing (the message names the path).
        ValueError: sha256 mismatch (expected/actual), unreadable checkpoint, or state-dict keys/shapes that
            do not match the config (lists a few, plus the config used).
    """
    ckpt, conf = Path(ckpt_path), Path(config_path)
    for p, what in ((ckpt, "checkpoint"), (conf, "config")):
        if not p.is_file():
            raise FileNotFoundError(f"VQGAN {what} not found: {p}")
    cfg = VQGANConfig.from_yaml(conf)
    if sha256 is not None:
        actual = file_sha256(ckpt)
        if actual.lower() != sha256.strip().lower():
            raise ValueError(f"sha256 mismatch for {ckpt}: expected {sha256}, actual {actual}")
    sd = _model_state(_read_checkpoint(ckpt, trusted=sha256 is not None), ckpt)

    with torch.device("meta"):
        model = VQGAN(cfg)
    _check_state(model, sd, cfg, ckpt)
    params = model.state_dict()
    sd = {k: v.to(dtype=params[k].dtype) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# Straight-through helpers for VQGAN+CLIP
# --------------------------------------------------------------------------------------------------


class _ReplaceGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x_forward: Tensor, x_backward: Tensor) -> Tensor:
        ctx.shape = x_backward.shape
        return x_forward

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        return None, grad.sum_to_size(ctx.shape)


class _ClampWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, lo: float, hi: float) -> Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        # pass the gradient unless it would push an out-of-range value further out
        return grad * (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def replace_grad(x_forward: Tensor, x_backward: Tensor) -> Tensor:
    """Value of ``x_forward``; gradient flows to ``x_backward`` unchanged (straight-through)."""
    out: Tensor = _ReplaceGrad.apply(x_forward, x_backward)
    return out


def clamp_with_grad(x: Tensor, lo: float, hi: float) -> Tensor:
    """``x.clamp(lo, hi)`` whose gradient still reaches clamped values when it points back into range."""
    out: Tensor = _ClampWithGrad.apply(x, lo, hi)
    return out


def vector_quantize_st(z: Tensor, codebook: Tensor, dim: int = 1) -> Tensor:
    """Snap each vector of ``z`` along ``dim`` (channels; 1 for (B, C, H, W)) to its nearest ``codebook``
    row (codebook (n_embed, C), e.g. ``model.quantize.embedding.weight``). Forward: the codes; backward:
    identity to ``z`` (straight-through), no gradient to the codebook."""
    zl = z.movedim(dim, -1)
    idx = _nearest_code(zl.reshape(-1, zl.shape[-1]), codebook)
    zq = codebook[idx].view(zl.shape).movedim(-1, dim)
    return replace_grad(zq, z)
