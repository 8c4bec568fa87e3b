"""Refinement core: a loaded VQGAN + CLIP pair and the loop over them. No gRPC or NATS here."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from ganfolk.runtime.models import fetch_weights, model_ref, require_weights_or_random, resolve_device
from ganfolk.runtime.settings import ConfigError
from ganfolk.v1 import common_pb2
from services.clip.loader import LoadedClip, load_clip
from services.vqgan.config import VQGANSettings
from services.vqgan.model import VQGAN, VQGANConfig, build_vqgan, load_vqgan
from services.vqgan.refine import (
    MemoryEstimate,
    Progress,
    Prompt,
    RefineParams,
    RefineResult,
    check_memory,
    downsampling_factor,
    refine,
)

__all__ = ["VQGANCore", "load_core"]

log = logging.getLogger(__name__)
VQGAN_NAME = "vqgan-taming"


class VQGANCore:
    """The loaded models of the service; one refinement runs at a time (it fills the device)."""

    def __init__(
        self,
        vqgan: VQGAN,
        clip: LoadedClip,
        device: str,
        vqgan_ref: common_pb2.ModelRef,
        memory_budget_bytes: float,
    ) -> None:
        self.vqgan = vqgan
        self.clip = clip
        self.device = device
        self.models = [vqgan_ref, clip.ref]
        self.memory_budget_bytes = memory_budget_bytes
        self.factor = downsampling_factor(vqgan)
        self._lock = threading.Lock()
        # Refinements running now (observable by tests and metrics).
        self.active = 0

    @property
    def random_weights(self) -> bool:
        return any(m.random_weights for m in self.models)

    def check_memory(self, size: int, cutn: int) -> MemoryEstimate:
        """ResourceExhausted naming cutn or size when a request would not fit this replica."""
        return check_memory(self.vqgan, self.clip, size, cutn, self.memory_budget_bytes, self.factor)

    def refine(
        self,
        init_image: Image.Image | None,
        prompts: Sequence[Prompt],
        params: RefineParams,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RefineResult:
        self.check_memory(params.size, params.cutn)
        with self._lock:
            self.active += 1
            try:
                return refine(
                    self.vqgan, self.clip, init_image, prompts, params, on_progress, should_stop, self.device
                )
            finally:
                self.active -= 1
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()


def _budget(settings: VQGANSettings, device: str) -> float:
    if settings.vqgan_memory_budget_mb is not None:
        return settings.vqgan_memory_budget_mb * (1 << 20)
    if device.startswith("cuda"):
        return 0.9 * torch.cuda.get_device_properties(torch.device(device)).total_memory
    try:  # half of the machine's RAM on CPU
        return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8.0 * (1 << 30)


def _load_vqgan(settings: VQGANSettings, device: str) -> tuple[VQGAN, common_pb2.ModelRef]:
    source = require_weights_or_random(settings, "vqgan_checkpoint", "VQGAN checkpoint")
    if source is None:
        torch.manual_seed(0)
        cfg = VQGANConfig(
            embed_dim=settings.vqgan_random_embed_dim,
            n_embed=settings.vqgan_random_n_embed,
            ch=settings.vqgan_random_ch,
            ch_mult=settings.vqgan_random_ch_mult,
            num_res_blocks=1,
            attn_resolutions=(),
            resolution=settings.vqgan_random_resolution,
            z_channels=settings.vqgan_random_embed_dim,
        )
        model = build_vqgan(cfg).to(device).eval().requires_grad_(False)
        return model, model_ref(VQGAN_NAME, random_weights=True)
    if not settings.vqgan_config:
        raise ConfigError(
            "GANFOLK_VQGAN_CONFIG is required with GANFOLK_VQGAN_CHECKPOINT: the taming .yaml that "
            "describes the checkpoint's architecture"
        )
    sha = settings.vqgan_checkpoint_sha256
    ckpt = fetch_weights(source, settings, sha, "GANFOLK_VQGAN_CHECKPOINT")
    conf = fetch_weights(settings.vqgan_config, settings, None, "GANFOLK_VQGAN_CONFIG")
    model = load_vqgan(ckpt, conf, device=device, sha256=sha)
    log.info("vqgan loaded", extra={"checkpoint": str(ckpt), "device": device})
    return model, model_ref(VQGAN_NAME, source, (sha or "").lower())


def load_core(settings: VQGANSettings) -> VQGANCore:
    """Load the VQGAN and CLIP (through the CLIP service's loader); random weights only when allowed."""
    device = resolve_device(settings.device)
    if device == "cpu" and settings.vqgan_cpu_threads:
        torch.set_num_threads(settings.vqgan_cpu_threads)
    vqgan, ref = _load_vqgan(settings, device)
    clip = load_clip(
        settings.vqgan_clip_model,
        settings.vqgan_clip_checkpoint,
        device=device,
        sha256=settings.vqgan_clip_sha256,
        allow_random=settings.allow_random_weights,
        settings=settings,
        model_config=settings.vqgan_clip_model_config,
        variable="GANFOLK_VQGAN_CLIP_CHECKPOINT",
    )
    return VQGANCore(vqgan, clip, device, ref, _budget(settings, device))
