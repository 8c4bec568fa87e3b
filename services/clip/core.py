"""CLIP core: embeddings and prompt-image scores with a loaded open_clip model. No gRPC or NATS here.

Synchronous methods (``embed_texts``, ``embed_images``, ``rank``) run minibatches directly and
suit in-process callers. The ``a``-prefixed coroutines go through the dynamic batchers, so
concurrent requests share forward passes; the adapters use those.

Scores: for prompts ``(t_j, w_j)`` and an image ``i`` the score is the weighted mean cosine
``Σ_j w_j · cos(img_i, t_j) / Σ_j |w_j|``, so it stays in [-1, 1]; a negative weight pushes
images away from its text.

Prompts longer than the model's context length are truncated as open_clip does (the last
token becomes end-of-text); the indices of truncated texts are reported to the caller. Each
text is BPE-encoded once (the tokens and the truncation report come from the same pass), in
a worker thread on the async path, so long texts never hold up the event loop.
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
    """Thread-safe LRU of text embeddings (CPU float32 rows), each with whether its text was truncated.

    Memory is bounded by ``size`` entries of one row and one key each; keys are bounded by the
    request limit on text length (GANFOLK_CLIP_MAX_TEXT_CHARS).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: collections.OrderedDict[str, tuple[torch.Tensor, bool]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> tuple[torch.Tensor, bool] | None:
        """The cached (row, truncated) of ``text``, or None."""
        with self._lock:
            entry = self._data.get(text)
            if entry is None:
                self.misses += 1
                return None
            self._data.move_to_end(text)
            self.hits += 1
            return entry

    def put(self, text: str, row: torch.Tensor, truncated: bool = False) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[text] = (row, truncated)
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
        self._read_gate: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self.image_batcher: DynamicBatcher | None = None
        self.text_batcher: DynamicBatcher | None = None
        if settings.clip_dynamic_batching:
            wait, most = settings.clip_max_wait_ms, settings.clip_max_batch
            # The checks run per request before it joins a shared pass: bad rows fail their own caller.
            self.image_batcher = DynamicBatcher(self.encode_pixels, most, wait, "image", self.check_pixels)
            self.text_batcher = DynamicBatcher(self.encode_tokens, most, wait, "text", self.check_tokens)

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
        """Tokens (N, context_length) and the indices of texts that were truncated to fit.

        The same tokens as open_clip's tokenizer call, from one BPE pass per text: open_clip's
        call encodes each text and cuts it to the context, so the truncation report would
        otherwise need a second pass. CPU-bound and holding the GIL; async callers run it in
        a worker thread.
        """
        tokenizer = self.loaded.tokenizer
        encode = getattr(tokenizer, "encode", None)
        sot = getattr(tokenizer, "sot_token_id", None)
        eot = getattr(tokenizer, "eot_token_id", None)
        if encode is None or sot is None or eot is None or getattr(tokenizer, "reduction_fn", None):
            # A tokenizer that reduces rather than truncates: its own call, nothing to report.
            return tokenizer(list(texts)), []
        ctx = self.context_length
        tokens = torch.zeros(len(texts), ctx, dtype=torch.long)
        truncated: list[int] = []
        for i, text in enumerate(texts):
            ids = [sot, *encode(text), eot]
            if len(ids) > ctx:
                ids = ids[:ctx]
                ids[-1] = eot
                truncated.append(i)
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return tokens, truncated

    def check_tokens(self, tokens: torch.Tensor) -> None:
        """Refuse token rows the text tower cannot take (ValueError saying what is wrong)."""
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length or tokens.dtype != torch.long:
            raise ValueError(
                f"tokens must be int64 (N, {self.context_length}), got {tokens.dtype} {tuple(tokens.shape)}"
            )
        vocab = getattr(self.model, "vocab_size", None)
        if tokens.numel():
            low, high = int(tokens.min()), int(tokens.max())
            if low < 0 or (vocab is not None and high >= vocab):
                raise ValueError(f"token ids must be in [0, {vocab}), got {low}..{high}")

    def check_pixels(self, pixels: torch.Tensor) -> None:
        """Refuse pixel rows the image tower cannot take (ValueError saying what is wrong)."""
        want = (3, *self.image_size)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != want or not pixels.is_floating_point():
            raise ValueError(
                f"pixels must be floating (N, {', '.join(map(str, want))}), got {pixels.dtype} "
                f"{tuple(pixels.shape)}"
            )

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
        """open_clip's inference preprocessing for this model, stacked: (N, 3, H, W) float32.

        Images far from the model's aspect ratio are first cut to their middle (see
        :meth:`crop_extreme`), which bounds the memory of the resize step.
        """
        if not images:
            return torch.empty(0, 3, *self.image_size)
        return torch.stack([self.loaded.preprocess(self.crop_extreme(im)) for im in images])

    def crop_extreme(self, img: Image.Image) -> Image.Image:
        """Cut an image of extreme aspect ratio to its middle, keeping what preprocessing keeps.

        open_clip resizes the shortest side to the model's size and then keeps the centre:
        a 1 x 100,000 px strip would first become a 224 x 22,400,000 px image (60 GB as
        floats). The centre crop never looks beyond the middle, so everything past twice the
        kept extent is cut before resizing; images within 2:1 of the model's aspect ratio are
        untouched, and the kept middle still has a full margin for the resampling filter.
        """
        if self.loaded.preprocess_cfg.get("resize_mode", "shortest") not in (None, "shortest"):
            return img  # squash / longest resize to within the model's size: no blow-up
        th, tw = self.image_size
        w, h = img.size
        scale = max(th / h, tw / w)  # shortest side to the model's size
        keep_w, keep_h = min(w, math.ceil(2 * tw / scale)), min(h, math.ceil(2 * th / scale))
        if (keep_w, keep_h) == (w, h):
            return img
        left, top = (w - keep_w) // 2, (h - keep_h) // 2
        return img.crop((left, top, left + keep_w, top + keep_h))

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
        return self.text_embeddings(texts)[0]

    def text_embeddings(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """:meth:`embed_texts` and the indices of the texts truncated to the context length."""
        entries, misses = self._cached(texts)
        bs = self.settings.clip_text_batch_size
        for start in range(0, len(misses), bs):
            chunk = misses[start : start + bs]
            tokens, cut = self.tokenize(chunk)
            self._remember(chunk, self.encode_tokens(tokens), cut, entries)
        return self._gather(texts, entries)

    def _cached(self, texts: Sequence[str]) -> tuple[dict[str, tuple[torch.Tensor, bool]], list[str]]:
        """Cache entries of the distinct ``texts`` found, and the distinct texts not found."""
        entries: dict[str, tuple[torch.Tensor, bool]] = {}
        misses: list[str] = []
        for text in dict.fromkeys(texts):
            entry = self.cache.get(text)
            if entry is None:
                misses.append(text)
            else:
                entries[text] = entry
        return entries, misses

    def _remember(
        self,
        texts: Sequence[str],
        out: torch.Tensor,
        truncated: Sequence[int],
        entries: dict[str, tuple[torch.Tensor, bool]],
    ) -> None:
        cut = set(truncated)
        for i, (text, row) in enumerate(zip(texts, out, strict=True)):
            row = row.clone()  # own storage: a cached row must not pin the whole batch
            entries[text] = (row, i in cut)
            self.cache.put(text, row, i in cut)

    def _gather(
        self, texts: Sequence[str], entries: dict[str, tuple[torch.Tensor, bool]]
    ) -> tuple[torch.Tensor, list[int]]:
        truncated = [i for i, t in enumerate(texts) if entries[t][1]]
        return self._stack([entries[t][0] for t in texts]), truncated

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
        return (await self.atext_embeddings(texts))[0]

    async def atext_embeddings(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """As :meth:`text_embeddings`, sharing forward passes with concurrent callers.

        Only texts missing from the cache are tokenized, once each, in a worker thread.
        """
        if self.text_batcher is None:
            return await asyncio.to_thread(self.text_embeddings, texts)
        entries, misses = self._cached(texts)
        if misses:
            tokens, cut = await asyncio.to_thread(self.tokenize, misses)
            self._remember(misses, await self.text_batcher.submit(tokens), cut, entries)
        return self._gather(texts, entries)

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

    def read_gate(self) -> asyncio.Semaphore:
        """The gate on reading and decoding images, shared by every request of this event loop.

        Shared, so that at most GANFOLK_CLIP_READ_CONCURRENCY decoded images (up to
        GANFOLK_CLIP_MAX_IMAGE_PIXELS each) are held at once in the whole process, however
        many requests arrive together: a per-request gate let memory grow with the callers.
        """
        loop = asyncio.get_running_loop()
        if self._read_gate is None or self._read_gate[0] is not loop:
            self._read_gate = (loop, asyncio.Semaphore(self.settings.clip_read_concurrency))
        return self._read_gate[1]

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
