"""StyleGAN2 generator in pure PyTorch, compatible with rosinality/stylegan2-pytorch checkpoints.

The module tree, parameter/buffer names and ``forward`` signature follow rosinality's
``model.Generator`` so a ``g_ema`` state dict loads with ``strict=True``. Everything runs
through plain ``torch`` ops (native ``upfirdn2d``, ``conv2d`` / ``conv_transpose2d`` and
``leaky_relu(x + bias, 0.2) * sqrt(2)`` for the fused activation), so the same code runs on
CPU and GPU with no compiled extensions.

The architecture is data: :class:`GeneratorConfig` holds the size, style width, mapping depth
and per-resolution channel widths, and can be inferred from a state dict's tensor shapes.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import random
import re
import warnings
from argparse import Namespace
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganfolk.runtime.hashing import file_sha256

__all__ = [
    "Discriminator",
    "DiscriminatorConfig",
    "Generator",
    "GeneratorConfig",
    "build_discriminator",
    "build_generator",
    "load_discriminator",
    "load_generator",
    "upfirdn2d",
]

_SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------- config


def _rosinality_channels(size: int, channel_multiplier: int) -> dict[int, int]:
    """rosinality's per-resolution width table (shared by its Generator and Discriminator)."""
    cm = channel_multiplier
    table = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * cm,
        128: 128 * cm,
        256: 64 * cm,
        512: 32 * cm,
        1024: 16 * cm,
    }
    if size > 1024:
        raise ValueError(f"rosinality's width table stops at 1024, got size {size}")
    return {r: w for r, w in table.items() if r <= size}


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a rosinality StyleGAN2 generator.

    ``channels`` maps every resolution 4, 8, …, ``size`` to its feature width. ``lr_mlp``
    (the mapping network's learning-rate multiplier, which scales its weights at run time)
    cannot be read from tensors; every public checkpoint uses 0.01.
    """

    size: int
    style_dim: int
    n_mlp: int
    channels: dict[int, int] = field(hash=False)
    blur_kernel: tuple[float, ...] = (1, 3, 3, 1)
    lr_mlp: float = 0.01

    def __post_init__(self) -> None:
        size = self.size
        if size < 4 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {size}")
        if self.style_dim < 1 or self.n_mlp < 1:
            raise ValueError(f"style_dim and n_mlp must be >= 1, got {self.style_dim}, {self.n_mlp}")
        missing = [r for r in self.resolutions if r not in self.channels]
        if missing:
            raise ValueError(f"channels lacks widths for resolutions {missing} (size {size})")
        # Keep only the resolutions in use, in order, in a private copy (the dataclass is frozen).
        object.__setattr__(self, "channels", {r: int(self.channels[r]) for r in self.resolutions})
        object.__setattr__(self, "blur_kernel", tuple(self.blur_kernel))
        if len(self.blur_kernel) < 2:
            raise ValueError(f"blur_kernel needs at least 2 taps, got {self.blur_kernel}")

    def __hash__(self) -> int:
        return hash(
            (
                self.size,
                self.style_dim,
                self.n_mlp,
                tuple(self.channels.items()),
                self.blur_kernel,
                self.lr_mlp,
            )
        )

    @property
    def log_size(self) -> int:
        return self.size.bit_length() - 1

    @property
    def resolutions(self) -> list[int]:
        return [2**i for i in range(2, self.log_size + 1)]

    @property
    def num_layers(self) -> int:
        """Number of noise inputs (one per StyledConv)."""
        return (self.log_size - 2) * 2 + 1

    @property
    def n_latent(self) -> int:
        """Number of per-layer W vectors the synthesis network consumes."""
        return self.log_size * 2 - 2

    @classmethod
    def rosinality(
        cls, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2
    ) -> GeneratorConfig:
        """Widths of rosinality's public ``Generator(size, style_dim, n_mlp, channel_multiplier)``."""
        return cls(
            size=size,
            style_dim=style_dim,
            n_mlp=n_mlp,
            channels=_rosinality_channels(size, channel_multiplier),
        )

    @classmethod
    def from_state_dict(
        cls,
        sd: Mapping[str, Tensor],
        *,
        lr_mlp: float = 0.01,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> GeneratorConfig:
        """Infer the architecture from a rosinality ``g_ema`` state dict's tensor shapes.

        size = 4 · 2^(number of ``to_rgbs``), style_dim = mapping width, n_mlp = number of
        ``style.N`` layers, width at 4 px = ``input.input`` channels and at 2^(i+3) px = the
        output channels of ``convs.{2i}``. ``lr_mlp`` and the blur taps are not recoverable
        (the blur kernel buffers themselves are loaded from the state dict); only the tap
        count is checked against the stored kernels.
        """
        try:
            mlp = sorted(int(m[1]) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
            n_rgb = len({m[1] for k in sd if (m := re.fullmatch(r"to_rgbs\.(\d+)\.conv\.weight", k))})
            style_dim = int(sd["style.1.weight"].shape[0])
            channels = {4: int(sd["input.input"].shape[1])}
            for i in range(n_rgb):
                channels[2 ** (i + 3)] = int(sd[f"convs.{2 * i}.conv.weight"].shape[1])
        except KeyError as e:
            raise ValueError(f"not a rosinality StyleGAN2 generator state dict: missing key {e}") from e
        if mlp != list(range(1, len(mlp) + 1)):
            raise ValueError(f"mapping layers style.N must be numbered 1..n, found {mlp}")
        kernel = sd.get("convs.0.conv.blur.kernel")
        if kernel is not None and kernel.shape[0] != len(blur_kernel):
            raise ValueError(
                f"stored blur kernel has {kernel.shape[0]} taps but blur_kernel={tuple(blur_kernel)}"
            )
        return cls(
            size=4 * 2**n_rgb,
            style_dim=style_dim,
            n_mlp=len(mlp),
            channels=channels,
            blur_kernel=tuple(blur_kernel),
            lr_mlp=lr_mlp,
        )


# --------------------------------------------------------------------------- ops


def make_kernel(k: Sequence[float]) -> Tensor:
    t = torch.tensor(k, dtype=torch.float32)
    if t.ndim == 1:
        t = t[None, :] * t[:, None]
    return t / t.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample (zero insertion), pad (negative crops), FIR filter, downsample — per channel.

    Same arithmetic as rosinality's ``upfirdn2d_native``: a true convolution with ``kernel``
    (hence the flip, since ``conv2d`` correlates) over each channel separately. The filter runs as
    one depthwise conv (``groups=c``) rather than over ``n * c`` single-channel images, which
    oneDNN's CPU kernels handle 15-50x slower, backward especially (identical results).
    """
    n, c, h, w = x.shape
    p0, p1 = pad
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, (p0, p1, p0, p1))
    weight = kernel.flip(0, 1).to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


def fused_leaky_relu(x: Tensor, bias: Tensor) -> Tensor:
    """Bias over dim 1, leaky ReLU(0.2), gain sqrt(2) (rosinality's CPU formula)."""
    return F.leaky_relu(x + bias.view(1, -1, *([1] * (x.ndim - 2))), 0.2) * _SQRT2


# --------------------------------------------------------------------------- blocks


class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate (weights scaled at run time)."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class Blur(nn.Module):
    kernel: Tensor

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * gain)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    kernel: Tensor

    def __init__(self, kernel: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = len(kernel) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated (optionally demodulated) conv, as in StyleGAN2.

    With ``upsample`` it is a stride-2 transposed conv followed by a blur. ``fused`` picks how the
    styles enter: ``True`` builds per-sample weights and runs one grouped conv (rosinality's way),
    ``False`` scales the activations instead and runs one shared-weight conv over the batch (the
    ADA code's training path), ``None`` (the default) fuses in eval mode only. The two are the
    same function. Measured on CPU (``bench/train_stylegan.py``), the shared conv is faster where
    the cost is (many channels, upsampling) and slower on few channels at high resolution.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        self.fused: bool | None = None
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), gain=factor**2)
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.padding = kernel_size // 2

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        styles = self.modulation(style)
        fused = (not self.training) if self.fused is None else self.fused
        return self._fused(x, styles) if fused else self._shared(x, styles)

    def _fused(self, x: Tensor, styles: Tensor) -> Tensor:
        b, cin, h, w = x.shape
        k, cout = self.kernel_size, self.out_ch
        weight = self.scale * self.weight * styles.view(b, 1, cin, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, cout, 1, 1, 1)
        x = x.reshape(1, b * cin, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * cin, cout, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
            return self.blur(out.reshape(b, cout, out.shape[2], out.shape[3]))
        out = F.conv2d(x, weight.reshape(b * cout, cin, k, k), padding=self.padding, groups=b)
        return out.reshape(b, cout, out.shape[2], out.shape[3])

    def _shared(self, x: Tensor, styles: Tensor) -> Tensor:
        b = x.shape[0]
        weight = self.scale * self.weight[0]  # (cout, cin, k, k)
        x = x * styles.view(b, -1, 1, 1).to(x.dtype)
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), padding=0, stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # The fused weight's per-(sample, out channel) norm, without building that weight.
            norm = (weight.pow(2).sum([2, 3]).unsqueeze(0) * styles.pow(2).unsqueeze(1)).sum(2)
            out = out * torch.rsqrt(norm + 1e-8).view(b, -1, 1, 1).to(out.dtype)
        return out


class NoiseInjection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, latent: Tensor) -> Tensor:
        return self.input.repeat(latent.shape[0], 1, 1, 1)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_ch, out_ch, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    def __init__(
        self, in_ch: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[float] = (1, 3, 3, 1)
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# --------------------------------------------------------------------------- generator


class Generator(nn.Module):
    """StyleGAN2 generator with rosinality's state-dict layout and call signature.

    ``latent_avg`` is a non-persistent buffer (not in the state dict): the checkpoint's mean
    W with shape (1, style_dim), or ``None``. It is the default ``truncation_latent``.
    """

    latent_avg: Tensor | None

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.size, self.style_dim = config.size, config.style_dim
        self.log_size, self.num_layers, self.n_latent = config.log_size, config.num_layers, config.n_latent
        self.channels = dict(config.channels)
        ch, sd, bk = config.channels, config.style_dim, config.blur_kernel

        self.style = nn.Sequential(
            PixelNorm(),
            *(EqualLinear(sd, sd, lr_mul=config.lr_mlp, activation=True) for _ in range(config.n_mlp)),
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, sd, blur_kernel=bk)
        self.to_rgb1 = ToRGB(ch[4], sd, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        in_ch = ch[4]
        for res in config.resolutions[1:]:
            out_ch = ch[res]
            self.convs.append(StyledConv(in_ch, out_ch, 3, sd, upsample=True, blur_kernel=bk))
            self.convs.append(StyledConv(out_ch, out_ch, 3, sd, blur_kernel=bk))
            self.to_rgbs.append(ToRGB(out_ch, sd, blur_kernel=bk))
            in_ch = out_ch
        self.register_buffer("latent_avg", None, persistent=False)

    def set_latent_avg(self, latent_avg: Tensor | None) -> None:
        """Store the mean W (shape (style_dim,) or (1, style_dim)) as a (1, style_dim) buffer."""
        if latent_avg is None:
            self.latent_avg = None
            return
        if latent_avg.numel() != self.style_dim or latent_avg.ndim not in (1, 2):
            raise ValueError(
                f"latent_avg must have shape ({self.style_dim},) or (1, {self.style_dim}), "
                f"got {tuple(latent_avg.shape)}"
            )
        ref = self.input.input
        self.latent_avg = (
            latent_avg.detach().reshape(1, self.style_dim).to(device=ref.device, dtype=ref.dtype)
        )

    def make_noise(self) -> list[Tensor]:
        """Fresh random noise maps, one per layer (4, 8, 8, 16, 16, … px)."""
        device = self.input.input.device
        return [
            torch.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), device=device)
            for i in range(self.num_layers)
        ]

    @torch.no_grad()
    def mean_latent(self, n_latent: int) -> Tensor:
        """Mean of the mapping network over ``n_latent`` random z, shape (1, style_dim)."""
        z = torch.randn(n_latent, self.style_dim, device=self.input.input.device)
        return self.style(z).mean(0, keepdim=True)

    def get_latent(self, z: Tensor) -> Tensor:
        """Mapping network: z (N, style_dim) → w (N, style_dim)."""
        return self.style(z)

    def forward(
        self,
        styles: Sequence[Tensor],
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
        input_is_latent: bool = False,
        noise: Sequence[Tensor | None] | None = None,
        randomize_noise: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Synthesize images in about [-1, 1] (N, 3, size, size); see rosinality's Generator.

        ``styles`` is a list of one z/w batch, or two for style mixing at ``inject_index``
        (random in [1, n_latent-1] when None). A single w may also be (N, n_latent, style_dim).
        With ``truncation < 1`` and no ``truncation_latent`` the stored ``latent_avg`` is used.
        """
        if isinstance(styles, Tensor):
            raise TypeError("styles must be a list of tensors, e.g. g([z])")
        ws = list(styles) if input_is_latent else [self.style(s) for s in styles]
        if not 1 <= len(ws) <= 2:
            raise ValueError(f"styles must hold 1 or 2 tensors, got {len(ws)}")

        if noise is None:
            if randomize_noise:
                noise = [None] * self.num_layers
            else:
                noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        elif len(noise) != self.num_layers:
            raise ValueError(f"noise must hold {self.num_layers} maps, got {len(noise)}")

        if truncation < 1:
            if truncation_latent is None:
                truncation_latent = self.latent_avg
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (or a loaded latent_avg)")
            ws = [truncation_latent + truncation * (w - truncation_latent) for w in ws]

        if len(ws) == 1:
            w0 = ws[0]
            latent = w0 if w0.ndim == 3 else w0.unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            latent = torch.cat(
                [
                    ws[0].unsqueeze(1).repeat(1, inject_index, 1),
                    ws[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1),
                ],
                1,
            )

        out = self.conv1(self.input(latent), latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, n1, n2, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs, strict=True
        ):
            out = conv_up(out, latent[:, i], noise=n1)
            out = conv(out, latent[:, i + 1], noise=n2)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip, (latent if return_latents else None)


def build_generator(config: GeneratorConfig, device: str | torch.device | None = None) -> Generator:
    """Factory: a randomly initialised :class:`Generator` (``device="meta"``: shapes only, no memory)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return Generator(config)


# --------------------------------------------------------------------------- loading


def _torch_load(path: Path, allow_pickle: bool) -> Any:
    try:
        # argparse.Namespace is allowlisted: rosinality's train.py stores its ``args`` in checkpoints.
        with torch.serialization.safe_globals([Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise ValueError(f"{path} is not a readable torch checkpoint: {e}") from e
        if not allow_pickle:
            raise ValueError(
                f"{path} holds Python objects beyond tensors and cannot be loaded safely "
                f"(weights_only=True failed: {str(e).splitlines()[0]}). "
                "Pass allow_pickle=True only if you trust the file."
            ) from e
        # Point at whoever called the public loader (loader -> _read_entry -> here).
        warnings.warn(f"loading {path} with full pickle (allow_pickle=True)", stacklevel=4)
        return torch.load(path, map_location="cpu", weights_only=False)
    except OSError:
        raise
    except Exception as e:  # garbage bytes surface as assorted errors from the unpickler / zip reader
        raise ValueError(f"{path} is not a readable torch checkpoint: {type(e).__name__}: {e}") from e


def _read_entry(
    p: Path, key: str, *, sha256: str | None, allow_pickle: bool
) -> tuple[Mapping[str, Any], Mapping[str, Tensor]]:
    """Verify and read a rosinality checkpoint; return it and its state dict under ``key``."""
    if not p.is_file():
        raise FileNotFoundError(f"StyleGAN2 checkpoint not found: {p}")
    if sha256 is not None:
        actual = file_sha256(p)
        if actual != sha256.strip().lower():
            raise ValueError(f"sha256 mismatch for {p}: expected {sha256.strip().lower()}, actual {actual}")

    ckpt = _torch_load(p, allow_pickle)
    if not isinstance(ckpt, Mapping) or key not in ckpt:
        found = sorted(map(str, ckpt.keys())) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"{p} is not a rosinality StyleGAN2 checkpoint: no '{key}' entry; found {found}")
    sd = ckpt[key]
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{p}: '{key}' is not a state dict of tensors (got {type(sd).__name__})")
    return ckpt, sd


def load_generator(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    sha256: str | None = None,
    allow_pickle: bool = False,
) -> Generator:
    """Load a rosinality StyleGAN2 checkpoint (``.pt`` with ``g_ema``) as an eval-mode :class:`Generator`.

    The architecture is inferred from the ``g_ema`` tensor shapes (:meth:`GeneratorConfig.from_state_dict`)
    and the weights are loaded with ``strict=True``. ``latent_avg`` (shape (style_dim,) as in
    checkpoints converted from NVIDIA's pickles, or (1, style_dim)) is stored on the module as
    ``g.latent_avg`` with shape (1, style_dim); it is ``None`` when the file has none.

    The file is read with ``torch.load(weights_only=True)`` (``argparse.Namespace`` allowed, as
    rosinality's training checkpoints contain one); full unpickling happens only with
    ``allow_pickle=True``. Parameters are frozen (``requires_grad=False``); gradients still
    flow to inputs.

    Args:
        path: checkpoint file.
        device: where the returned module lives.
        sha256: expected hex digest of the file; checked before anything is unpickled.
        allow_pickle: permit a non-weights-only load for trusted files.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: checksum mismatch; the file is not a torch checkpoint, not a rosinality
            checkpoint (no ``g_ema``), or its tensors do not form a consistent generator.
    """
    p = Path(path)
    ckpt, sd = _read_entry(p, "g_ema", sha256=sha256, allow_pickle=allow_pickle)
    config = GeneratorConfig.from_state_dict(sd)
    # Built directly on the target device: random init costs less than a first meta-device build.
    g = build_generator(config, device=device)
    try:
        g.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{p}: g_ema does not match the inferred architecture {config}: {e}") from e
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, Tensor):
        raise ValueError(f"{p}: latent_avg is a {type(latent_avg).__name__}, expected a tensor")
    g.set_latent_avg(latent_avg)
    return g.eval().requires_grad_(False)


# --------------------------------------------------------------------------- discriminator


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Architecture of a rosinality StyleGAN2 (residual) discriminator.

    ``channels`` maps every resolution 4, 8, …, ``size`` to its feature width. The minibatch
    standard-deviation layer compares samples in groups of ``stddev_group`` and appends
    ``stddev_feat`` feature maps before the final conv.
    """

    size: int
    channels: dict[int, int] = field(hash=False)
    blur_kernel: tuple[float, ...] = (1, 3, 3, 1)
    stddev_group: int = 4
    stddev_feat: int = 1

    def __post_init__(self) -> None:
        size = self.size
        if size < 4 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {size}")
        missing = [r for r in self.resolutions if r not in self.channels]
        if missing:
            raise ValueError(f"channels lacks widths for resolutions {missing} (size {size})")
        object.__setattr__(self, "channels", {r: int(self.channels[r]) for r in self.resolutions})
        object.__setattr__(self, "blur_kernel", tuple(self.blur_kernel))
        if len(self.blur_kernel) < 2:
            raise ValueError(f"blur_kernel needs at least 2 taps, got {self.blur_kernel}")
        if self.stddev_group < 1 or self.stddev_feat < 1:
            raise ValueError(
                f"stddev_group and stddev_feat must be >= 1, got {self.stddev_group}, {self.stddev_feat}"
            )
        if self.channels[4] % self.stddev_feat:
            raise ValueError(f"stddev_feat {self.stddev_feat} must divide the 4 px width {self.channels[4]}")

    def __hash__(self) -> int:
        return hash(
            (self.size, tuple(self.channels.items()), self.blur_kernel, self.stddev_group, self.stddev_feat)
        )

    @property
    def resolutions(self) -> list[int]:
        return [2**i for i in range(2, self.size.bit_length())]

    @classmethod
    def rosinality(cls, size: int, channel_multiplier: int = 2) -> DiscriminatorConfig:
        """Widths of rosinality's public ``Discriminator(size, channel_multiplier)``."""
        return cls(size=size, channels=_rosinality_channels(size, channel_multiplier))

    @classmethod
    def from_state_dict(
        cls, sd: Mapping[str, Tensor], *, blur_kernel: Sequence[float] = (1, 3, 3, 1), stddev_group: int = 4
    ) -> DiscriminatorConfig:
        """Infer the architecture from a rosinality ``d`` state dict's tensor shapes.

        size = 4 · 2^(number of ResBlocks ``convs.1…``), width at ``size`` = the output of the
        1×1 ``convs.0`` and at ``size / 2^i`` = the output of ``convs.{i}.conv2``; the extra
        input channels of ``final_conv`` are the stddev features. The group size and the blur
        taps' values are not in the tensors (the kernels themselves load from the state dict);
        only the tap count is checked.
        """
        try:
            n_res = len({m[1] for k in sd if (m := re.fullmatch(r"convs\.(\d+)\.conv1\.0\.weight", k))})
            size = 4 * 2**n_res
            channels = {size: int(sd["convs.0.0.weight"].shape[0])}
            for i in range(1, n_res + 1):
                channels[size >> i] = int(sd[f"convs.{i}.conv2.1.weight"].shape[0])
            channels.setdefault(4, int(sd["final_conv.0.weight"].shape[0]))
            stddev_feat = int(sd["final_conv.0.weight"].shape[1]) - channels[4]
        except KeyError as e:
            raise ValueError(f"not a rosinality StyleGAN2 discriminator state dict: missing key {e}") from e
        kernel = sd.get("convs.1.conv2.0.kernel")
        if kernel is not None and kernel.shape[0] != len(blur_kernel):
            raise ValueError(
                f"stored blur kernel has {kernel.shape[0]} taps but blur_kernel={tuple(blur_kernel)}"
            )
        return cls(
            size=size,
            channels=channels,
            blur_kernel=tuple(blur_kernel),
            stddev_group=stddev_group,
            stddev_feat=stddev_feat,
        )


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate: N(0, 1) weights scaled by 1/sqrt(fan_in) at run time."""

    bias: nn.Parameter | None

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.stride, self.padding = stride, padding
        # Absent (not zero) when unused, so the state dict has no key for it, as in rosinality.
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


def conv_layer(
    in_ch: int,
    out_ch: int,
    kernel_size: int,
    downsample: bool = False,
    blur_kernel: Sequence[float] = (1, 3, 3, 1),
    activate: bool = True,
    bias: bool = True,
) -> nn.Sequential:
    """rosinality's ``ConvLayer``: [blur →] equalized conv [→ bias + leaky ReLU].

    Downsampling blurs first (anti-aliasing) and then convolves with stride 2, unpadded. With
    an activation the bias lives in the activation, so the conv itself has none.
    """
    layers: list[nn.Module] = []
    if downsample:
        p = (len(blur_kernel) - 2) + (kernel_size - 1)
        layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
        stride, padding = 2, 0
    else:
        stride, padding = 1, kernel_size // 2
    layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride, padding, bias=bias and not activate))
    if activate:
        layers.append(FusedLeakyReLU(out_ch))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """Two 3×3 convs (the second halving the resolution) plus a 1×1 downsampling skip."""

    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv1 = conv_layer(in_ch, in_ch, 3, blur_kernel=blur_kernel)
        self.conv2 = conv_layer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = conv_layer(
            in_ch, out_ch, 1, downsample=True, blur_kernel=blur_kernel, activate=False, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        # Dividing by sqrt(2) keeps the sum's variance that of each branch.
        return (self.conv2(self.conv1(x)) + self.skip(x)) / _SQRT2


class MinibatchStdDev(nn.Module):
    """Append the mean per-group standard deviation of the features as ``feat`` extra maps.

    Samples are grouped as rosinality does (``view(group, -1, …)``: sample ``b`` joins the
    group of every sample with the same ``b mod (N / group)``), which the golden outputs
    depend on.
    """

    def __init__(self, group: int = 4, feat: int = 1) -> None:
        super().__init__()
        self.group, self.feat = group, feat

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        group = min(n, self.group)
        if n % group:
            raise ValueError(f"batch size {n} is not a multiple of the stddev group size {group}")
        y = x.view(group, -1, self.feat, c // self.feat, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        return torch.cat([x, y.repeat(group, 1, h, w)], 1)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator with rosinality's state-dict layout: (N, 3, s, s) → (N, 1) logits."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self.size = config.size
        ch, bk = config.channels, config.blur_kernel
        blocks: list[nn.Module] = [conv_layer(3, ch[config.size], 1)]
        for res in reversed(config.resolutions[1:]):
            blocks.append(ResBlock(ch[res], ch[res // 2], bk))
        self.convs = nn.Sequential(*blocks)
        self.stddev = MinibatchStdDev(config.stddev_group, config.stddev_feat)
        self.final_conv = conv_layer(ch[4] + config.stddev_feat, ch[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activation=True),
            EqualLinear(ch[4], 1),
        )

    def forward(self, img: Tensor) -> Tensor:
        """Realness logits, shape (N, 1); N must be a multiple of ``min(N, stddev_group)``."""
        if img.ndim != 4 or img.shape[1:] != (3, self.size, self.size):
            raise ValueError(f"expected images (N, 3, {self.size}, {self.size}), got {tuple(img.shape)}")
        out = self.final_conv(self.stddev(self.convs(img)))
        return self.final_linear(out.flatten(1))


def build_discriminator(
    config: DiscriminatorConfig, device: str | torch.device | None = None
) -> Discriminator:
    """Factory: a randomly initialised :class:`Discriminator` (``device="meta"``: shapes only)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return Discriminator(config)


def load_discriminator(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    sha256: str | None = None,
    allow_pickle: bool = False,
) -> Discriminator:
    """Load the ``d`` entry of a rosinality StyleGAN2 training checkpoint as a :class:`Discriminator`.

    The architecture is inferred from the tensor shapes (:meth:`DiscriminatorConfig.from_state_dict`)
    and the weights load with ``strict=True``. File handling is that of :func:`load_generator`
    (``weights_only`` unless ``allow_pickle``, optional ``sha256`` check first). Unlike the
    generator the parameters stay trainable: a discriminator is only useful for training.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: checksum mismatch; not a torch checkpoint, no ``d`` entry (e.g. a sampling
            checkpoint holding only ``g_ema``), or tensors that do not form a discriminator.
    """
    p = Path(path)
    _, sd = _read_entry(p, "d", sha256=sha256, allow_pickle=allow_pickle)
    config = DiscriminatorConfig.from_state_dict(sd)
    d = build_discriminator(config, device=device)
    try:
        d.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{p}: d does not match the inferred architecture {config}: {e}") from e
    return d
