"""RRDBNet (ESRGAN / Real-ESRGAN generator) in plain PyTorch.

The module layout and parameter names follow the public Real-ESRGAN ``.pth``
files (``RealESRGAN_x4plus.pth`` and friends), so those checkpoints load
unchanged: ``conv_first``, ``body.<i>.rdb<1..3>.conv<1..5>``, ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``.

The network always upsamples its feature map 4x (nearest x2, conv, nearest x2,
conv).  Scale-2 and scale-1 models first fold the input with a pixel-unshuffle
(by 2 and by 4), which is why their first convolution sees 4x / 16x the input
channels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganfolk.runtime.hashing import file_sha256

__all__ = [
    "RRDB",
    "RRDBNet",
    "RRDBNetConfig",
    "ResidualDenseBlock",
    "load_rrdbnet",
    "pixel_unshuffle",
    "upscale_tiled",
    "upscale_tiled_uint8",
]

# Residual scaling used inside the dense blocks and around each RRDB.
_RESIDUAL_SCALE = 0.2
_LRELU_SLOPE = 0.2
# scale -> pixel-unshuffle factor applied to the input before conv_first
_UNSHUFFLE = {4: 1, 2: 2, 1: 4}


@dataclass(frozen=True)
class RRDBNetConfig:
    """Architecture of an RRDBNet.  The defaults are Real-ESRGAN x4plus."""

    num_in_ch: int = 3
    num_out_ch: int = 3
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    scale: int = 4

    def __post_init__(self) -> None:
        for name in ("num_in_ch", "num_out_ch", "num_feat", "num_grow_ch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"RRDBNetConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_block, int) or self.num_block < 0:
            raise ValueError(f"RRDBNetConfig.num_block must be an integer >= 0, got {self.num_block!r}")
        if self.scale not in _UNSHUFFLE:
            raise ValueError(f"RRDBNetConfig.scale must be one of 1, 2, 4, got {self.scale!r}")

    @property
    def unshuffle_factor(self) -> int:
        """Pixel-unshuffle factor applied to the input (1 for scale 4)."""
        return _UNSHUFFLE[self.scale]

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any], num_in_ch: int | None = None) -> RRDBNetConfig:
        """Infer the architecture from tensor shapes.

        ``num_feat`` and the first conv's input width come from
        ``conv_first.weight``, ``num_out_ch`` from ``conv_last.weight``,
        ``num_grow_ch`` from ``body.0.rdb1.conv1.weight`` and ``num_block`` from the
        highest ``body.<i>`` index.  The first conv sees ``num_in_ch * u*u`` channels
        where ``u`` is the unshuffle factor (1, 2, 4 for scale 4, 2, 1); that product
        alone is ambiguous, so unless ``num_in_ch`` is given the input is assumed to
        have as many channels as the output (true of every Real-ESRGAN model), and a
        first-conv width that is no multiple of that is read as a scale-4 model.
        """
        for key in ("conv_first.weight", "conv_last.weight"):
            if key not in sd:
                raise ValueError(f"not an RRDBNet state dict: missing {key!r}")
        first = tuple(sd["conv_first.weight"].shape)
        last = tuple(sd["conv_last.weight"].shape)
        if len(first) != 4 or len(last) != 4:
            raise ValueError(f"not an RRDBNet state dict: conv weights of shape {first} and {last}")
        num_feat, first_in = int(first[0]), int(first[1])
        num_out_ch = int(last[0])

        block_ids = set()
        for key in sd:
            parts = key.split(".")
            if parts[0] == "body" and len(parts) > 1 and parts[1].isdigit():
                block_ids.add(int(parts[1]))
        num_block = max(block_ids) + 1 if block_ids else 0
        if block_ids and block_ids != set(range(num_block)):
            missing = sorted(set(range(num_block)) - block_ids)
            raise ValueError(f"not an RRDBNet state dict: body blocks {missing} missing")
        if num_block:
            grow_key = "body.0.rdb1.conv1.weight"
            if grow_key not in sd:
                raise ValueError(f"not an RRDBNet state dict: missing {grow_key!r}")
            num_grow_ch = int(sd[grow_key].shape[0])
        else:
            num_grow_ch = 32  # irrelevant without blocks; keep the public default

        reference_in = num_in_ch if num_in_ch is not None else num_out_ch
        scale = 4
        for candidate, factor in ((4, 1), (2, 2), (1, 4)):
            if first_in == reference_in * factor * factor:
                scale = candidate
                break
        else:
            if num_in_ch is not None:
                raise ValueError(
                    f"conv_first takes {first_in} channels, which is not {num_in_ch} x 1, 4 or 16 "
                    f"(scale 4, 2 or 1) for num_in_ch={num_in_ch}"
                )
        in_ch = first_in // (_UNSHUFFLE[scale] ** 2)
        return cls(
            num_in_ch=in_ch,
            num_out_ch=num_out_ch,
            num_feat=num_feat,
            num_block=num_block,
            num_grow_ch=num_grow_ch,
            scale=scale,
        )


def pixel_unshuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Fold each ``factor x factor`` patch into channels: (N, C, H, W) -> (N, C*f*f, H/f, W/f).

    Channel ``c * f*f + i * f + j`` of the output holds pixel ``(i, j)`` of each patch of
    input channel ``c`` (the inverse of ``pixel_shuffle``).
    """
    n, c, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"pixel_unshuffle by {factor} needs H and W divisible by {factor}, got {h}x{w}")
    x = x.reshape(n, c, h // factor, factor, w // factor, factor)
    x = x.permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * factor * factor, h // factor, w // factor)


def _scaled_kaiming_(convs: list[nn.Conv2d], scale: float) -> None:
    """ESRGAN's init: Kaiming-normal weights shrunk by ``scale``, zero biases."""
    for conv in convs:
        nn.init.kaiming_normal_(conv.weight)
        with torch.no_grad():
            conv.weight.mul_(scale)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the last one's output is added back scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        widths = [num_feat + k * num_grow_ch for k in range(5)]
        self.conv1 = nn.Conv2d(widths[0], num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(widths[1], num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(widths[2], num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(widths[3], num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(widths[4], num_feat, 3, 1, 1)
        _scaled_kaiming_([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            # In place on the conv's fresh output: one feature map less alive at a time.
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), _LRELU_SLOPE, inplace=True))
        out = self.conv5(torch.cat(features, 1))
        return out * _RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks inside a scaled skip."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * _RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """The Real-ESRGAN generator; input and output are (N, C, H, W) floats in [0, 1]."""

    def __init__(self, config: RRDBNetConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else RRDBNetConfig()
        self.config = cfg
        # sha256 of the file the weights came from (set by load_rrdbnet), for provenance
        self.sha256: str | None = None
        first_in = cfg.num_in_ch * cfg.unshuffle_factor**2
        self.conv_first = nn.Conv2d(first_in, cfg.num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(cfg.num_feat, cfg.num_grow_ch) for _ in range(cfg.num_block)))
        self.conv_body = nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(cfg.num_feat, cfg.num_out_ch, 3, 1, 1)

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this (the unshuffle factor)."""
        return self.config.unshuffle_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = self.config.unshuffle_factor
        feat = pixel_unshuffle(x, factor) if factor > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        # The activations run in place on each conv's fresh output: at 4x the input size these maps
        # are the largest tensors of the pass (64 channels), and a copy of each would double the peak.
        up = F.interpolate(feat, scale_factor=2, mode="nearest")
        feat = F.leaky_relu(self.conv_up1(up), _LRELU_SLOPE, inplace=True)
        up = F.interpolate(feat, scale_factor=2, mode="nearest")
        del feat
        feat = F.leaky_relu(self.conv_up2(up), _LRELU_SLOPE, inplace=True)
        del up
        feat = F.leaky_relu(self.conv_hr(feat), _LRELU_SLOPE, inplace=True)
        return self.conv_last(feat)


def _describe_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    more = f", … ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"[{shown}{more}]" if keys else "[] (empty)"


def _select_state_dict(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("params_ema", "params"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{path} is not an RRDBNet checkpoint: it holds a {type(obj).__name__}, "
            "expected a state dict or a dict with 'params_ema' or 'params'"
        )
    keys = [str(k) for k in obj.keys()]
    if "conv_first.weight" not in obj or "conv_last.weight" not in obj:
        raise ValueError(
            f"{path} is not an RRDBNet checkpoint (expected 'params_ema', 'params' or a state dict "
            f"with 'conv_first.weight' … 'conv_last.weight'); found keys {_describe_keys(keys)}"
        )
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not an RRDBNet checkpoint: not every value is a tensor")
    return obj


def load_rrdbnet(path: str | Path, device: str | torch.device = "cpu", sha256: str | None = None) -> RRDBNet:
    """Load a Real-ESRGAN / BasicSR RRDBNet ``.pth`` and return it in eval mode on ``device``.

    The file may hold ``{"params_ema": sd}`` (preferred when present), ``{"params": sd}``
    or a bare state dict.  The architecture (:class:`RRDBNetConfig`, available as
    ``model.config``) is inferred from the tensor shapes, then every key must match
    exactly (no missing, no unexpected keys, same shapes).  The returned module takes
    (N, C, H, W) floats in [0, 1] and returns (N, C, H*scale, W*scale); its parameters
    do not require grad.  ``model.sha256`` records the file's digest for provenance.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ValueError: ``sha256`` is given and differs from the file's (message gives
            expected and actual), or the file is not a readable RRDBNet checkpoint
            (message lists the keys found), or its keys/shapes do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RRDBNet weights not found: {path}")
    actual = file_sha256(path)
    if sha256 is not None and actual != sha256.strip().lower():
        raise ValueError(f"sha256 mismatch for {path}: expected {sha256.strip().lower()}, actual {actual}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors come in many types
        raise ValueError(f"{path} is not an RRDBNet checkpoint: torch.load failed ({exc})") from exc
    sd = _select_state_dict(obj, path)
    config = RRDBNetConfig.from_state_dict(sd)
    with torch.device("meta"):
        model = RRDBNet(config)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        expected = set(model.state_dict().keys())
        found = set(sd.keys())
        missing = sorted(expected - found)
        unexpected = sorted(found - expected)
        raise ValueError(
            f"{path} does not match RRDBNet{config}: missing keys {_describe_keys(missing)}, "
            f"unexpected keys {_describe_keys(unexpected)} ({exc})"
        ) from exc
    model = model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    model.sha256 = actual
    return model


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _tiles(
    model: nn.Module, x: torch.Tensor, tile: int, overlap: int
) -> Iterator[tuple[tuple[int, int, int, int], int, torch.Tensor]]:
    """Run ``model`` cell by cell: yields ((y0, y1, x0, x1) of the cell in ``x``, scale, its output).

    Coordinates past ``x``'s size belong to the padding added for unshuffling models; the
    caller crops them. Each output is the cell alone, on the model's device and in its dtype.
    """
    if x.ndim != 4:
        raise ValueError(f"upscale_tiled expects (N, C, H, W), got shape {tuple(x.shape)}")
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile must be >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}")
    device, dtype = _model_device_dtype(model)
    multiple = int(getattr(model, "input_multiple", 1))
    h, w = x.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f"cannot upscale an empty image of size {h}x{w}")
    tile = _round_up(tile, multiple)
    overlap = _round_up(overlap, multiple)
    ph, pw = _round_up(h, multiple) - h, _round_up(w, multiple) - w
    src = x
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        src = F.pad(x, (0, pw, 0, ph), mode=mode)
    return _run_tiles(model, src, tile, overlap, device, dtype)


def _run_tiles(
    model: nn.Module, src: torch.Tensor, tile: int, overlap: int, device: torch.device, dtype: torch.dtype
) -> Iterator[tuple[tuple[int, int, int, int], int, torch.Tensor]]:
    H, W = src.shape[-2:]
    if H <= tile and W <= tile:  # one tile: no context to add
        out = model(src.to(device=device, dtype=dtype))
        yield (0, H, 0, W), out.shape[-1] // W, out
        return
    scale = 0
    for y0 in range(0, H, tile):
        y1 = min(y0 + tile, H)
        for x0 in range(0, W, tile):
            x1 = min(x0 + tile, W)
            py0, py1 = max(y0 - overlap, 0), min(y1 + overlap, H)
            px0, px1 = max(x0 - overlap, 0), min(x1 + overlap, W)
            result = model(src[..., py0:py1, px0:px1].to(device=device, dtype=dtype))
            if not scale:
                scale = result.shape[-1] // (px1 - px0)
                if scale < 1 or result.shape[-1] != scale * (px1 - px0):
                    raise ValueError(
                        f"model output width {result.shape[-1]} is no integer multiple of its input "
                        f"width {px1 - px0}"
                    )
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            cell = result[..., oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale]
            del result
            yield (y0, y1, x0, x1), scale, cell
            del cell  # the next tile's pass need not wait beside this one's output


@torch.no_grad()  # not inference_mode: callers may update the result in place
def upscale_tiled(model: nn.Module, x: torch.Tensor, tile: int = 256, overlap: int = 16) -> torch.Tensor:
    """Run ``model`` on ``x`` (N, C, H, W) tile by tile so memory is bounded by the tile size.

    The input is cut into ``tile x tile`` cells; each cell is run with ``overlap``
    extra input pixels of context on every side (clipped at the image border) and
    only the output of the cell itself is pasted, so seams vanish once ``overlap``
    covers the model's receptive field and are small otherwise.  An input that
    fits in one tile runs untiled.  Tiles run on the model's device and in its
    dtype; the result is returned on ``x``'s device in ``x``'s dtype, so a CPU
    image can be upscaled by a GPU model holding only one tile on the GPU.
    Models that pixel-unshuffle (``input_multiple`` > 1) get reflect-padded input
    and the padding is cropped from the output.
    """
    tiles = _tiles(model, x, tile, overlap)  # checks x's shape and the arguments
    n, _, h, w = x.shape
    multiple = int(getattr(model, "input_multiple", 1))
    out: torch.Tensor | None = None
    scale = 1
    for (y0, y1, x0, x1), scale, cell in tiles:
        if out is None:  # sized for the padded input; the padding is cropped below
            hp, wp = _round_up(h, multiple) * scale, _round_up(w, multiple) * scale
            out = torch.empty((n, cell.shape[1], hp, wp), dtype=x.dtype, device=x.device)
        out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] = cell.to(device=x.device, dtype=x.dtype)
    assert out is not None
    return out[..., : h * scale, : w * scale]


@torch.inference_mode()
def upscale_tiled_uint8(model: nn.Module, img: np.ndarray, tile: int = 256, overlap: int = 16) -> np.ndarray:
    """:func:`upscale_tiled` of an RGB ``uint8`` (H, W, C) image, returned as ``uint8`` (H*s, W*s, C).

    Each cell's output is rounded to ``uint8`` and pasted into one preallocated output as it
    comes, so no full-resolution float image is ever held: at 2,048 px that would be 48 MiB
    per copy, and converting it took four. The values equal rounding :func:`upscale_tiled`'s
    float output (clamped to [0, 1], times 255, rounded half to even).
    """
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"expected a uint8 (H, W, C) image, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    out: np.ndarray | None = None
    for (y0, y1, x0, x1), scale, cell in _tiles(model, x, tile, overlap):
        if out is None:
            out = np.empty((h * scale, w * scale, cell.shape[1]), dtype=np.uint8)
        # Cells of the unshuffle padding reach past the image: keep only what lies inside it.
        yh, xw = min(y1, h) - y0, min(x1, w) - x0
        if yh <= 0 or xw <= 0:
            continue
        part = cell[0, :, : yh * scale, : xw * scale].float().clamp_(0.0, 1.0).mul_(255.0).round_()
        out[y0 * scale : (y0 + yh) * scale, x0 * scale : (x0 + xw) * scale] = (
            part.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        )
    assert out is not None
    return out
