"""taming's PatchGAN discriminator and its two discriminator losses.

The module tree follows ``taming.modules.discriminator.model.NLayerDiscriminator`` (BatchNorm, no
ActNorm), so the ``loss.discriminator.*`` entries of a taming checkpoint load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NLayerDiscriminator", "hinge_d_loss", "init_weights", "vanilla_d_loss"]


def _down(cin: int, cout: int, stride: int, norm: bool) -> list[nn.Module]:
    # A conv feeding BatchNorm has no bias: BN's shift makes it redundant (taming's use_bias).
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride=stride, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, True))
    return layers


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs, one stride-1, then a 1-channel patch logit map."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if input_nc < 1 or ndf < 1 or n_layers < 1:
            raise ValueError(f"need input_nc, ndf, n_layers >= 1, got {input_nc}, {ndf}, {n_layers}")
        self.input_nc, self.ndf, self.n_layers = input_nc, ndf, n_layers
        widths = [ndf * min(2**i, 8) for i in range(n_layers + 1)]
        layers = _down(input_nc, ndf, 2, norm=False)
        for i in range(1, n_layers):
            layers += _down(widths[i - 1], widths[i], 2, norm=True)
        layers += _down(widths[-2], widths[-1], 1, norm=True)
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.main(x)
        return out


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """taming's ``weights_init``: convs N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """``0.5 * (mean(softplus(-real)) + mean(softplus(fake)))``: the logistic GAN loss."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())
