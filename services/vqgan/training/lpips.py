"""taming's LPIPS (VGG16 features, channel-normalised, five learned 1x1 ``lin`` weightings).

Nothing here downloads: the weights come from a state dict -- the ``loss.perceptual_loss.*`` of a
taming VQGAN checkpoint, a full LPIPS state dict, or torchvision's ``vgg16`` features together with
taming's ``vgg.pth`` lin weights (:func:`lpips_state_from`). A freshly built :class:`LPIPS` holds
random weights and says so (:attr:`LPIPS.loaded` is False) until one is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

__all__ = ["LPIPS", "LPIPSError", "lpips_state_from"]

CHANNELS = (64, 128, 256, 512, 512)
# VGG16 ``features``: output channels per conv, "M" a 2x2 max-pool; the slices end after the ReLU that
# LPIPS taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3), at these indices of ``features``.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_SLICE_ENDS = (4, 9, 16, 23, 30)


class LPIPSError(ValueError):
    """LPIPS weights that are missing or do not fit; the message says which."""


def _vgg16_features() -> list[nn.Module]:
    layers: list[nn.Module] = []
    cin = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            cout = int(item)
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            cin = cout
    return layers


class _Slices(nn.Module):
    """``slice1`` ... ``slice5``, each a Sequential keeping torchvision's ``features`` indices."""

    def __init__(self) -> None:
        super().__init__()
        layers, start = _vgg16_features(), 0
        for n, end in enumerate(_SLICE_ENDS, 1):
            part = nn.Sequential()
            for i in range(start, end):
                part.add_module(str(i), layers[i])
            self.add_module(f"slice{n}", part)
            start = end

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for part in self.children():
            x = part(x)
            outs.append(x)
        return outs


class _Lin(nn.Module):
    """``model.1`` is the 1x1 weighting; ``model.0`` is taming's dropout, off in eval mode."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class _Scaling(nn.Module):
    """The ImageNet-style input normalisation LPIPS was trained with (constants, stored as buffers)."""

    shift: Tensor
    scale: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale


class LPIPS(nn.Module):
    """``LPIPS()(x, y)`` -> (B, 1, 1, 1) distances for images in [-1, 1]; frozen, always in eval mode.

    taming builds it with ``.eval()``; keeping it there (dropout off) makes the loss deterministic.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = _Scaling()
        self.net = _Slices()
        for i, c in enumerate(CHANNELS):
            self.add_module(f"lin{i}", _Lin(c))
        self.requires_grad_(False).eval()
        self.loaded = False

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)

    def load(self, state: Mapping[str, Tensor], where: str) -> LPIPS:
        """Load a full LPIPS state dict (see :func:`lpips_state_from`); :class:`LPIPSError` if it
        does not fit."""
        expected = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        # The scaling constants are LPIPS's own; a source without them (torchvision + vgg.pth) keeps ours.
        missing = sorted(k for k in expected if k not in state and not k.startswith("scaling_layer."))
        wrong = [
            f"{k}: {tuple(state[k].shape)} vs {s}"
            for k, s in expected.items()
            if k in state and tuple(state[k].shape) != s
        ]
        if missing or wrong:
            raise LPIPSError(
                f"{where} does not hold LPIPS VGG16 weights: "
                + (f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''} " if missing else "")
                + (f"shape mismatch {wrong[:4]}" if wrong else "")
            )
        self.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
        self.loaded = True
        return self

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        fx, fy = self.net(self.scaling_layer(x)), self.net(self.scaling_layer(y))
        total: Tensor | None = None
        for i, (a, b) in enumerate(zip(fx, fy, strict=True)):
            diff = (_unit(a) - _unit(b)) ** 2
            term = getattr(self, f"lin{i}").model(diff).mean((2, 3), keepdim=True)
            total = term if total is None else total + term
        assert total is not None
        return total


def _unit(x: Tensor, eps: float = 1e-10) -> Tensor:
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + eps)


_PREFIXES = ("loss.perceptual_loss.", "perceptual_loss.", "")
_TV_FEATURE = re.compile(r"^features\.(\d+)\.(weight|bias)$")


def lpips_state_from(states: Iterable[tuple[str, Mapping[str, Tensor]]]) -> dict[str, Tensor]:
    """One LPIPS state dict from ``(where, state_dict)`` sources, merged in order.

    Each source may be a taming VQGAN checkpoint's state dict (``loss.perceptual_loss.*``), an LPIPS
    state dict (``net.slice*``, ``lin*``), taming's ``vgg.pth`` (``lin*`` only) or torchvision's VGG16
    (``features.N.*``, mapped onto the slices). Entries that are none of these are ignored.
    """
    out: dict[str, Tensor] = {}
    for _, sd in states:
        for key, value in sd.items():
            if not isinstance(value, Tensor):
                continue
            m = _TV_FEATURE.match(key)
            if m:
                index = int(m[1])
                n = next((i for i, end in enumerate(_SLICE_ENDS, 1) if index < end), None)
                if n is not None:
                    out[f"net.slice{n}.{index}.{m[2]}"] = value
                continue
            for prefix in _PREFIXES:
                rest = key[len(prefix) :] if key.startswith(prefix) else None
                if rest is not None and re.match(r"^(scaling_layer\.|net\.slice\d\.|lin\d\.model\.)", rest):
                    out[rest] = value
                    break
    return out
