"""taming's VQGAN objective (``VQLPIPSWithDiscriminator``) as pieces a training step composes.

Autoencoder: ``mean(|x - x̂| + perceptual_weight * LPIPS(x, x̂)) + d_weight * disc_factor * (-mean D(x̂))
+ codebook_weight * codebook_loss`` with ``d_weight = clamp(‖∇nll‖ / (‖∇g‖ + 1e-4), 0, 1e4) *
disc_weight``, both gradients taken at the decoder's last layer, and ``disc_factor`` 0 before
``disc_start``. Discriminator: ``disc_factor * hinge_or_vanilla(D(x), D(x̂))``.

:class:`VQLoss` holds ``perceptual_loss`` and ``discriminator`` under taming's names, so as the
``loss`` child of a checkpoint its ``loss.*`` entries match a taming checkpoint's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from services.vqgan.training.discriminator import (
    NLayerDiscriminator,
    hinge_d_loss,
    init_weights,
    vanilla_d_loss,
)
from services.vqgan.training.lpips import LPIPS

__all__ = [
    "LOSS_TARGET",
    "LossConfig",
    "VQLoss",
    "adaptive_weight",
    "calculate_adaptive_weight",
]

LOSS_TARGET = "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"
D_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}


@dataclass(frozen=True)
class LossConfig:
    """``model.params.lossconfig.params`` of a taming yaml, with taming's defaults."""

    disc_start: int = 0
    codebook_weight: float = 1.0
    pixelloss_weight: float = 1.0
    disc_num_layers: int = 3
    disc_in_channels: int = 3
    disc_factor: float = 1.0
    disc_weight: float = 1.0
    perceptual_weight: float = 1.0
    use_actnorm: bool = False
    disc_conditional: bool = False
    disc_ndf: int = 64
    disc_loss: str = "hinge"

    def __post_init__(self) -> None:
        if self.disc_loss not in D_LOSSES:
            raise ValueError(
                f"lossconfig disc_loss must be one of {sorted(D_LOSSES)}, got {self.disc_loss!r}"
            )
        if self.use_actnorm:
            raise ValueError(
                "lossconfig use_actnorm: true is not supported (the discriminator uses BatchNorm)"
            )
        if self.disc_conditional:
            raise ValueError("lossconfig disc_conditional: true is not supported (unconditional VQGAN only)")
        if self.disc_start < 0 or self.disc_num_layers < 1 or self.disc_ndf < 1 or self.disc_in_channels < 1:
            raise ValueError(f"lossconfig has out-of-range values: {self}")

    @classmethod
    def from_taming(cls, lossconfig: Mapping[str, Any] | None) -> LossConfig:
        """From ``model.params.lossconfig`` (``target`` + ``params``); None gives the defaults."""
        if not lossconfig:
            return cls()
        target = str(lossconfig.get("target", LOSS_TARGET))
        if target.rsplit(".", 1)[-1] != LOSS_TARGET.rsplit(".", 1)[-1]:
            raise ValueError(f"unsupported lossconfig target {target!r} (only VQLPIPSWithDiscriminator)")
        params = dict(lossconfig.get("params") or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"lossconfig params not understood: {unknown}")
        return cls(**params)

    def as_taming(self) -> dict[str, Any]:
        """The ``lossconfig`` mapping a taming yaml holds."""
        return {"target": LOSS_TARGET, "params": {f.name: getattr(self, f.name) for f in fields(self)}}


def adaptive_weight(nll_grad: Tensor, g_grad: Tensor, disc_weight: float) -> Tensor:
    """taming's adaptive discriminator weight from the two last-layer gradients (detached)."""
    ratio = torch.linalg.vector_norm(nll_grad) / (torch.linalg.vector_norm(g_grad) + 1e-4)
    return ratio.clamp(0.0, 1e4).detach() * disc_weight


def calculate_adaptive_weight(
    nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, disc_weight: float
) -> Tensor:
    """taming's ``calculate_adaptive_weight``: gradients of both losses at ``last_layer``."""
    (nll_grad,) = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    return adaptive_weight(nll_grad, g_grad, disc_weight)


class VQLoss(nn.Module):
    """The perceptual network and the discriminator, with the loss terms that use them."""

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.config = cfg
        self.perceptual_loss = LPIPS()
        self.discriminator = NLayerDiscriminator(cfg.disc_in_channels, cfg.disc_ndf, cfg.disc_num_layers)
        init_weights(self.discriminator)
        self.d_loss_fn = D_LOSSES[cfg.disc_loss]

    def disc_factor(self, global_step: int) -> float:
        """``disc_factor`` from ``disc_start`` on, 0 before (taming's ``adopt_weight``)."""
        return self.config.disc_factor if global_step >= self.config.disc_start else 0.0

    def nll(self, x: Tensor, xrec: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(nll, mean L1, mean LPIPS)``: the reconstruction term and its two parts (for logs)."""
        rec = (x - xrec).abs()
        if self.config.perceptual_weight > 0:
            p = self.perceptual_loss(x, xrec)
            total = (rec + self.config.perceptual_weight * p).mean()
            return total, rec.mean().detach(), p.mean().detach()
        return rec.mean(), rec.mean().detach(), torch.zeros((), device=x.device)

    def g_loss(self, xrec: Tensor) -> Tensor:
        """The autoencoder's adversarial term ``-mean D(x̂)``."""
        return -self.discriminator(xrec).mean()

    def d_loss(self, x: Tensor, xrec: Tensor, global_step: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(disc_factor * loss, mean D(x), mean D(x̂))``; reals and fakes pass D separately, as taming."""
        real = self.discriminator(x.detach())
        fake = self.discriminator(xrec.detach())
        loss = self.disc_factor(global_step) * self.d_loss_fn(real, fake)
        return loss, real.detach().mean(), fake.detach().mean()
