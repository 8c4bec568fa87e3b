"""StyleGAN2 losses and regularisers with the signatures and arithmetic of rosinality's ``train.py``.

The discriminator's output is a logit; "logistic" losses are written with ``softplus``
(``softplus(x) = -log sigmoid(-x)``), which is what the reference computes and is stable
for large logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["d_logistic_loss", "d_r1_loss", "g_nonsaturating_loss", "g_path_regularize"]


def d_logistic_loss(real_pred: Tensor, fake_pred: Tensor) -> Tensor:
    """Discriminator loss ``E[softplus(-D(real))] + E[softplus(D(fake))]`` (non-saturating GAN)."""
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def d_r1_loss(real_pred: Tensor, real_img: Tensor) -> Tensor:
    """R1 penalty: the batch mean of ``||∇_x D(x)||²`` over the real images.

    ``real_img`` must have ``requires_grad=True`` and ``real_pred`` must have been computed
    from it. The graph is kept (``create_graph``) so the penalty itself can be
    backpropagated into D's weights; the caller applies the ``r1 / 2`` weight and the lazy
    regularisation interval.
    """
    (grad,) = torch.autograd.grad(outputs=real_pred.sum(), inputs=real_img, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def g_nonsaturating_loss(fake_pred: Tensor) -> Tensor:
    """Generator loss ``E[softplus(-D(G(z)))]``: maximise log D rather than minimise log(1 - D)."""
    return F.softplus(-fake_pred).mean()


def g_path_regularize(
    fake_img: Tensor, latents: Tensor, mean_path_length: Tensor | float, decay: float = 0.01
) -> tuple[Tensor, Tensor, Tensor]:
    """Path-length regulariser of StyleGAN2.

    For a random image-space direction ``y`` (Gaussian, scaled by 1/sqrt(H·W) so the length
    does not grow with resolution) the per-sample path length is
    ``sqrt(mean_layers ||J_w^T y||²)``, with ``J_w`` the Jacobian of ``fake_img`` w.r.t. the
    per-layer latents ``latents`` (N, n_latent, style_dim) that produced it (``Generator(...,
    return_latents=True)``). The penalty pulls every length toward their running mean,
    which is updated with an exponential moving average of rate ``decay``.

    Returns:
        ``(path_penalty, new_mean_path_length (detached), path_lengths (N,))``.
    """
    noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad(outputs=(fake_img * noise).sum(), inputs=latents, create_graph=True)
    path_lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
    path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)
    path_penalty = (path_lengths - path_mean).pow(2).mean()
    return path_penalty, path_mean.detach(), path_lengths
