"""Which generator serves Sample: our StyleGAN2 port or the MobileStyleGAN demo.

Selection sits above both backends so that each may depend on :mod:`services.stylegan.core`
(the :class:`~services.stylegan.core.Sampler` contract) without core depending back on them.

- ``torch`` (the default): :class:`~services.stylegan.core.Sampler` over a rosinality
  StyleGAN2 checkpoint, or over random weights when the settings allow them (demo/test mode).
- ``mobilestylegan``: :class:`~services.stylegan.mobile.MobileStyleGANSampler`, the offline
  demo generator (non-commercial weights, demo only).
"""

from __future__ import annotations

import logging

import torch

from ganfolk.runtime.models import fetch_weights, model_ref, require_weights_or_random, resolve_device
from services.stylegan.config import StyleGANSettings
from services.stylegan.core import Sampler
from services.stylegan.mobile import MobileStyleGANSampler
from services.stylegan.model import GeneratorConfig, build_generator, load_generator

log = logging.getLogger(__name__)


def load_sampler(settings: StyleGANSettings) -> Sampler:
    """The sampler ``GANFOLK_STYLEGAN_BACKEND`` asks for, loaded onto its device.

    ``torch`` loads the configured checkpoint, or random weights when they are allowed;
    ``mobilestylegan`` loads the demo generator's OpenVINO IR.
    """
    if settings.stylegan_backend == "mobilestylegan":
        return MobileStyleGANSampler(
            settings.stylegan_mobile_dir,
            output_size=settings.stylegan_output_size,
            mean_latent_samples=settings.stylegan_mean_latent_samples,
        )
    device = resolve_device(settings.device)
    source = require_weights_or_random(settings, "stylegan_checkpoint", "StyleGAN2 checkpoint")
    if source is None:
        torch.manual_seed(0)
        cfg = GeneratorConfig.rosinality(
            settings.stylegan_random_size,
            style_dim=settings.stylegan_random_style_dim,
            n_mlp=2,
            channel_multiplier=1,
        )
        g = build_generator(cfg, device=device).eval()
        return Sampler(g, device, model_ref("stylegan2-rosinality", random_weights=True))
    path = fetch_weights(source, settings, settings.stylegan_checkpoint_sha256, "GANFOLK_STYLEGAN_CHECKPOINT")
    g = load_generator(path, device=device)
    sha = settings.stylegan_checkpoint_sha256 or ""
    log.info("stylegan loaded", extra={"checkpoint": str(path), "size": g.size, "device": device})
    return Sampler(g, device, model_ref("stylegan2-rosinality", source, sha))
