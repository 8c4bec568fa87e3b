"""CLIP core: embeddings and prompt-image scores with a loaded open_clip model. No gRPC or NATS here.

Synchronous methods (``embed_texts``, ``embed_images``, ``rank``) run minibatches directly and
suit in-process callers. The ``a``-prefixed coroutines go through the dynamic batchers, so
concurrent requests share forward passes; the adapters use those.

Scores: for prompts ``(t_j, w_j)`` and an image ``i`` the score is the weighted mean cosine
``Σ_j w_j · cos(img_i, t_j) / Σ_j |w_j|``, so it stays in [-1, 1]; a negative weight pushes
images away from its text.

Prompts longer than the model's context length are truncated as open_clip does (the last
token becomes end-of-text); the indices of truncated texts are reported to the caller.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from ganfolk.runtime.models import require_weights_or_random, resolve_device
from ganfolk.runtime.settings import ConfigError
from ganfolk.v1 import common_pb2
from services.clip.batcher import DynamicBatcher
from services.clip.config import ClipSettings
from services.clip.loader import LoadedClip, image_size_of, load_clip

__all__ = ["ClipCore", "Prompt", "TextCache", "load_core"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    text: str
    weight: float = 1.0


class TextCache:
    """Thread-safe LRU of text embeddings (CPU float32 rows)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> torch.Tensor | None:
        with self._lock:
            row = self._data.get(text)
            if row is None:
                self.misses += 1
                return None
            self._data.move_to_end(text)
            self.hits += 1
            return row

    def put(self, text: str, row: torch.Tensor) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[text] = row
            self._data.move_to_end(text)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class ClipCore:
    """A loaded open_clip model and what scoring needs beside it (preprocessing, caches, batchers)."""

    def __init__(self, loaded: LoadedClip, settings: ClipSettings) -> None:
        self.loaded = loaded
        self.settings = settings
        self.model = loaded.model
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.model_ref = loaded.ref
        self.context_length = loaded.context_length
        self.image_size = image_size_of(loaded.preprocess_cfg)
        cfg = loaded.preprocess_cfg
        self._mean = torch.tensor(cfg["mean"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg["std"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.cache = TextCache(settings.clip_text_cache_size)
        self.image_batcher: DynamicBatcher | None = None
        self.text_batcher: DynamicBatcher | None = None
        if settings.clip_dynamic_batching:
            wait = settings.clip_max_wait_ms
            self.image_batcher = DynamicBatcher(self.encode_pixels, settings.clip_max_batch, wait, "image")
            self.text_batcher = DynamicBatcher(self.encode_tokens, settings.clip_max_batch, wait, "text")

    # ------------------------------------------------------------------ basics

    @property
    def random_weights(self) -> bool:
        return bool(self.model_ref.random_weights)

    @property
    def models(self) -> list[common_pb2.ModelRef]:
        """The runtime's core convention: what GetInfo and the start-up log report."""
        return [self.model_ref]

    @property
    def dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[-1])
        if isinstance(proj, torch.nn.Linear):
            return int(proj.out_features)
        return int(self.encode_tokens(self.tokenize(["a"])[0]).shape[1])

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """Tokens (N, context_length) and the indices of texts that were truncated to fit."""
        tokens = self.loaded.tokenizer(list(texts))
        truncated: list[int] = []
        encode = getattr(self.loaded.tokenizer, "encode", None)
        clean = getattr(self.loaded.tokenizer, "clean_fn", None)
        if encode is not None:
            for i, text in enumerate(texts):
                n = len(encode(clean(text) if clean else text)) + 2  # + start and end tokens
                if n > self.context_length:
                    truncated.append(i)
        return tokens, truncated

    @torch.inference_mode()
    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """One forward pass of the text tower: L2-normalised float32 rows on CPU."""
        out = self.model.encode_text(tokens.to(self.device))  # type: ignore[operator]
        return F.normalize(out.float(), dim=-1).cpu()

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """One forward pass of the image tower on preprocessed pixels: normalised float32 rows on CPU."""
        out = self.model.encode_image(pixels.to(self.device, self.dtype))  # type: ignore[operator]
        return F.normalize(out.float(), dim=-1).cpu()

    # ------------------------------------------------------------------ preprocessing

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """open_clip's inference preprocessing for this model, stacked: (N, 3, H, W) float32."""
        if not images:
            return torch.empty(0, 3, *self.image_size)
        return torch.stack([self.loaded.preprocess(im) for im in images])

    @torch.inference_mode()
    def pixels_from_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Sampler images in [-1, 1] (N, 3, H, W) → model pixels, converted once as a batch.

        The same steps as the PIL path, on tensors: shortest side resized (bicubic, antialiased)
        to the model's size, centre crop, mean/std normalisation.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensor must be (N, 3, H, W), got {tuple(images.shape)}")
        x = ((images.to(self.device, torch.float32) + 1) / 2).clamp(0, 1)
        th, tw = self.image_size
        h, w = x.shape[-2:]
        if (h, w) != (th, tw):
            scale = max(th / h, tw / w)
            nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
            top, left = (nh - th) // 2, (nw - tw) // 2
            x = x[:, :, top : top + th, left : left + tw].clamp(0, 1)
        return (x - self._mean) / self._std

    def _pixels(self, images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            return self.pixels_from_tensor(images)
        return self.preprocess(images)

    # ------------------------------------------------------------------ synchronous API

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N, D), float32 on CPU; cached by text."""
        rows: dict[str, torch.Tensor] = {}
        misses: list[str] = []
        for text in dict.fromkeys(texts):
            row = self.cache.get(text)
            if row is None:
                misses.append(text)
            else:
                rows[text] = row
        bs = self.settings.clip_text_batch_size
        for start in range(0, len(misses), bs):
            chunk = misses[start : start + bs]
            out = self.encode_tokens(self.tokenize(chunk)[0])
            for text, row in zip(chunk, out, strict=True):
                row = row.clone()  # own storage: a cached row must not pin the whole batch
                rows[text] = row
                self.cache.put(text, row)
        return self._stack([rows[t] for t in texts])

    def embed_images(self, images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (N, D): PIL images, or [-1, 1] tensors (N, 3, H, W)."""
        pixels = self._pixels(images)
        bs = self.settings.clip_image_batch_size
        return self._stack([self.encode_pixels(p) for p in pixels.split(bs)] if len(pixels) else [])

    def scores(
        self, prompts: Sequence[Prompt], text_embs: torch.Tensor, image_embs: torch.Tensor
    ) -> torch.Tensor:
        """Weighted mean cosine of each image against the prompts: shape (N,)."""
        weights = torch.tensor([p.weight for p in prompts], dtype=torch.float32)
        total = float(weights.abs().sum())
        if not math.isfinite(total) or total == 0:
            raise ValueError("prompt weights must be finite and not all zero")
        return image_embs.float() @ text_embs.float().T @ weights / total

    def rank(self, prompts: Sequence[Prompt], images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """Scores (N,) of ``images`` against weighted ``prompts`` (in image order, not sorted)."""
        text_embs = self.embed_texts([p.text for p in prompts])
        return self.scores(prompts, text_embs, self.embed_images(images))

    # ------------------------------------------------------------------ batched (async) API

    async def aembed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """As :meth:`embed_texts`, sharing forward passes with concurrent callers."""
        if self.text_batcher is None:
            return await asyncio.to_thread(self.embed_texts, texts)
        rows: dict[str, torch.Tensor] = {}
        misses: list[str] = []
        for text in dict.fromkeys(texts):
            row = self.cache.get(text)
            if row is None:
                misses.append(text)
            else:
                rows[text] = row
        if misses:
            out = await self.text_batcher.submit(self.tokenize(misses)[0])
            for text, row in zip(misses, out, strict=True):
                row = row.clone()  # own storage: a cached row must not pin the whole batch
                rows[text] = row
                self.cache.put(text, row)
        return self._stack([rows[t] for t in texts])

    async def aembed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embeddings of preprocessed pixels, sharing forward passes with concurrent callers."""
        if self.image_batcher is None:
            bs = self.settings.clip_image_batch_size
            parts = [await asyncio.to_thread(self.encode_pixels, p) for p in pixels.split(bs)]
            return self._stack(parts)
        return await self.image_batcher.submit(pixels)

    async def aembed_images(self, images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        pixels = await asyncio.to_thread(self._pixels, images)
        return await self.aembed_pixels(pixels)

    async def aclose(self) -> None:
        for batcher in (self.image_batcher, self.text_batcher):
            if batcher is not None:
                await batcher.aclose()

    def _stack(self, rows: Sequence[torch.Tensor]) -> torch.Tensor:
        if not rows:
            return torch.empty(0, self.dim)
        return torch.cat([r.reshape(-1, r.shape[-1]) for r in rows])


def load_core(settings: ClipSettings) -> ClipCore:
    """Load the configured open_clip model (or random weights in demo mode) onto the device."""
    device = resolve_device(settings.device)
    source = require_weights_or_random(settings, "clip_checkpoint", "CLIP checkpoint")
    try:
        loaded = load_clip(
            settings.clip_model,
            source,
            device,
            sha256=settings.clip_checkpoint_sha256,
            allow_random=source is None,
            settings=settings,
            model_config=settings.clip_model_config,
        )
    except FileNotFoundError as exc:
        raise ConfigError(f"GANFOLK_CLIP_CHECKPOINT: {exc}") from exc
    core = ClipCore(loaded, settings)
    log.info(
        "clip ready",
        extra={
            "model": settings.clip_model,
            "device": device,
            "random_weights": core.random_weights,
            "image_size": list(core.image_size),
            "dim": core.dim,
        },
    )
    return core
