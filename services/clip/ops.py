"""The CLIP operations on protobuf messages, shared by the gRPC servicer and the NATS stage.

Validation lives here so both adapters reject the same bad requests with the same words
(``InvalidArgument`` → ``INVALID_ARGUMENT`` on gRPC, a terminated task on NATS).

Images are read (by URI, hash-checked, or inline), decoded and preprocessed in chunks of
``GANFOLK_CLIP_RANK_CHUNK``; only each image's score and reference are kept, so ranking
1,000 images under a prefix needs the memory of about two chunks, not of 1,000 images.
The next chunk is read while the current one runs through the model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.images import read_image_sync
from ganfolk.runtime.models import provenance
from ganfolk.runtime.protos import with_optionals
from ganfolk.runtime.storage import ObjectStore, sha256_hex, validate_key
from ganfolk.v1 import clip_pb2, common_pb2
from services.clip.config import ClipSettings
from services.clip.core import ClipCore, Prompt

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

Progress = Callable[[int, int], Awaitable[None]]


# ---------------------------------------------------------------------- validation


def validate_texts(texts: Sequence[str], settings: ClipSettings, what: str = "texts") -> list[str]:
    if not texts:
        raise InvalidArgument(f"no {what}: send at least one")
    limit = settings.clip_max_texts
    if len(texts) > limit:
        raise InvalidArgument(
            f"{len(texts)} {what} sent, at most {limit} per request (GANFOLK_CLIP_MAX_TEXTS)"
        )
    for i, text in enumerate(texts):
        check_text_length(text, f"{what}[{i}]", settings)
        if not text.strip():
            raise InvalidArgument(f"{what}[{i}] is empty; give it some words")
    return list(texts)


def check_text_length(text: str, what: str, settings: ClipSettings) -> None:
    """Refuse a text over GANFOLK_CLIP_MAX_TEXT_CHARS before any tokenizing is spent on it."""
    limit = settings.clip_max_text_chars
    if len(text) > limit:
        raise InvalidArgument(
            f"{what} is {len(text):,} characters, over the limit of {limit:,} (GANFOLK_CLIP_MAX_TEXT_CHARS); "
            "shorten it: CLIP reads only its first 77 tokens (a few hundred characters) anyway"
        )


def validate_prompts(request: clip_pb2.RankRequest, settings: ClipSettings) -> list[Prompt]:
    if not request.prompts:
        raise InvalidArgument("no prompts: send at least one prompt (text, optional weight)")
    if len(request.prompts) > settings.clip_max_prompts:
        raise InvalidArgument(
            f"{len(request.prompts)} prompts sent, at most {settings.clip_max_prompts} "
            "(GANFOLK_CLIP_MAX_PROMPTS)"
        )
    prompts = []
    for i, p in enumerate(request.prompts):
        check_text_length(p.text, f"prompts[{i}].text", settings)
        if not p.text.strip():
            raise InvalidArgument(f"prompts[{i}].text is empty; give it some words")
        prompt = with_optionals(Prompt(p.text), p)
        if prompt.weight != prompt.weight or abs(prompt.weight) == float("inf"):
            raise InvalidArgument(f"prompts[{i}].weight must be a finite number, got {prompt.weight}")
        prompts.append(prompt)
    if all(p.weight == 0 for p in prompts):
        raise InvalidArgument("all prompt weights are 0: give at least one prompt a non-zero weight")
    return prompts


def check_refs(refs: Sequence[common_pb2.ImageRef], settings: ClipSettings) -> None:
    if not refs:
        raise InvalidArgument("no images: send at least one image (uri or inline_data)")
    if len(refs) > settings.clip_max_images:
        raise InvalidArgument(
            f"{len(refs)} images sent, at most {settings.clip_max_images} per request "
            "(GANFOLK_CLIP_MAX_IMAGES); store them under a prefix and send image_prefix instead, "
            "or split the request"
        )
    for i, ref in enumerate(refs):
        if ref.WhichOneof("source") is None:
            raise InvalidArgument(f"images[{i}]: image reference is empty: set uri or inline_data")


# ---------------------------------------------------------------------- image streaming


@dataclass
class _Source:
    """One image to score: where it comes from, and the reference returned for it."""

    ref: common_pb2.ImageRef
    label: str  # for error messages: images[3] or the object key


def _prefix_sources(store: ObjectStore, prefix: str, settings: ClipSettings) -> list[_Source]:
    try:
        if "://" in prefix:
            prefix = store.key_from_uri(prefix.rstrip("/"))
        prefix = prefix.strip("/")
        validate_key(prefix)
    except ValueError as exc:
        raise InvalidArgument(f"image_prefix {prefix!r}: {exc}") from None
    sources: list[_Source] = []
    for info in store.list(prefix + "/"):
        if not info.key.lower().endswith(IMAGE_SUFFIXES):
            continue
        if len(sources) >= settings.clip_max_prefix_images:
            raise InvalidArgument(
                f"more than {settings.clip_max_prefix_images} images under {prefix!r} "
                "(GANFOLK_CLIP_MAX_PREFIX_IMAGES); split the task over narrower prefixes"
            )
        ref = common_pb2.ImageRef(uri=info.uri, sha256=info.sha256 or "", media_type=info.content_type)
        sources.append(_Source(ref, info.key))
    if not sources:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        raise InvalidArgument(f"no image objects under image_prefix {prefix!r} (looked for {suffixes})")
    return sources


def _load_one(
    core: ClipCore, store: ObjectStore, source: _Source, settings: ClipSettings
) -> tuple[torch.Tensor, common_pb2.ImageRef]:
    """Read, decode and preprocess one image (in a worker thread); return pixels and its reply ref."""
    try:
        img = read_image_sync(
            store,
            source.ref,
            min(settings.max_image_pixels, settings.clip_max_image_pixels),
            settings.max_inline_image_mb << 20,
        )
    except InvalidArgument as exc:
        raise InvalidArgument(f"{source.label}: {exc}") from None
    pixels = core.preprocess([img])[0]
    out = common_pb2.ImageRef()
    out.CopyFrom(source.ref)
    if out.WhichOneof("source") == "inline_data":
        # Not echoed back: the caller has the bytes; the index and hash identify the image.
        out.sha256 = out.sha256 or sha256_hex(out.inline_data)
        out.ClearField("inline_data")
    out.width, out.height = img.size
    return pixels, out


async def _load_chunk(
    core: ClipCore, store: ObjectStore, sources: Sequence[_Source], settings: ClipSettings
) -> tuple[torch.Tensor, list[common_pb2.ImageRef]]:
    gate = core.read_gate()

    async def one(s: _Source) -> tuple[torch.Tensor, common_pb2.ImageRef]:
        async with gate:
            return await asyncio.to_thread(_load_one, core, store, s, settings)

    loaded = await asyncio.gather(*(one(s) for s in sources))
    return torch.stack([p for p, _ in loaded]), [r for _, r in loaded]


def _chunks(sources: Sequence[_Source], size: int) -> Iterator[Sequence[_Source]]:
    for start in range(0, len(sources), size):
        yield sources[start : start + size]


async def stream_embeddings(
    core: ClipCore,
    store: ObjectStore,
    sources: Sequence[_Source],
    settings: ClipSettings,
    progress: Progress | None = None,
) -> AsyncIterator[tuple[torch.Tensor, list[common_pb2.ImageRef]]]:
    """Yield (embeddings, refs) chunk by chunk; the next chunk is read while this one is embedded."""
    chunks = list(_chunks(sources, settings.clip_rank_chunk))
    done = 0
    pending: asyncio.Task[tuple[torch.Tensor, list[common_pb2.ImageRef]]] | None = None
    if chunks:
        pending = asyncio.create_task(_load_chunk(core, store, chunks[0], settings))
    try:
        for k in range(len(chunks)):
            assert pending is not None
            pixels, refs = await pending
            pending = None
            if k + 1 < len(chunks):
                pending = asyncio.create_task(_load_chunk(core, store, chunks[k + 1], settings))
            embs = await core.aembed_pixels(pixels)
            del pixels
            done += len(refs)
            if progress is not None:
                await progress(done, len(sources))
            yield embs, refs
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)


# ---------------------------------------------------------------------- operations


def _provenance(core: ClipCore, parameters: dict[str, Any], started: float) -> common_pb2.Provenance:
    return provenance("clip", [core.model_ref], parameters, started, device=core.device)


async def embed_texts(
    core: ClipCore, request: clip_pb2.EmbedTextsRequest, settings: ClipSettings
) -> clip_pb2.EmbedTextsResponse:
    started = time.perf_counter()
    texts = validate_texts(request.texts, settings)
    embs, truncated = await core.atext_embeddings(texts)
    response = clip_pb2.EmbedTextsResponse(dim=int(embs.shape[1]))
    for row in embs.tolist():
        response.embeddings.add(values=row)
    params = {"model": core.loaded.model_name, "count": len(texts), "truncated_texts": truncated}
    response.provenance.CopyFrom(_provenance(core, params, started))
    return response


async def embed_images(
    core: ClipCore, store: ObjectStore, request: clip_pb2.EmbedImagesRequest, settings: ClipSettings
) -> clip_pb2.EmbedImagesResponse:
    started = time.perf_counter()
    check_refs(request.images, settings)
    sources = [_Source(ref, f"images[{i}]") for i, ref in enumerate(request.images)]
    response = clip_pb2.EmbedImagesResponse(dim=core.dim)
    async for embs, _refs in stream_embeddings(core, store, sources, settings):
        for row in embs.tolist():
            response.embeddings.add(values=row)
    params = {"model": core.loaded.model_name, "count": len(sources), "image_size": list(core.image_size)}
    response.provenance.CopyFrom(_provenance(core, params, started))
    return response


async def rank(
    core: ClipCore,
    store: ObjectStore,
    request: clip_pb2.RankRequest,
    settings: ClipSettings,
    progress: Progress | None = None,
) -> clip_pb2.RankResponse:
    """Score every image against the weighted prompts; best first, top_k kept (all when 0)."""
    started = time.perf_counter()
    prompts = validate_prompts(request, settings)
    if request.images and request.image_prefix:
        raise InvalidArgument("set either images or image_prefix, not both")
    if request.image_prefix:
        sources = await asyncio.to_thread(_prefix_sources, store, request.image_prefix, settings)
    else:
        check_refs(request.images, settings)
        if request.top_k > len(request.images):
            raise InvalidArgument(
                f"top_k={request.top_k} is more than the {len(request.images)} images sent; "
                "use 0 (or omit it) to keep all"
            )
        sources = [_Source(ref, f"images[{i}]") for i, ref in enumerate(request.images)]

    text_embs, truncated = await core.atext_embeddings([p.text for p in prompts])
    scores: list[torch.Tensor] = []
    refs: list[common_pb2.ImageRef] = []
    async for embs, chunk_refs in stream_embeddings(core, store, sources, settings, progress):
        scores.append(core.scores(prompts, text_embs, embs))
        refs.extend(chunk_refs)
    all_scores = torch.cat(scores)
    # Best first; equal scores keep request order.
    order = sorted(range(len(refs)), key=lambda i: (-float(all_scores[i]), i))
    keep = order[: request.top_k] if request.top_k else order
    response = clip_pb2.RankResponse(total=len(refs))
    for i in keep:
        response.ranked.add(image=refs[i], score=float(all_scores[i]), index=i)
    params: dict[str, Any] = {
        "model": core.loaded.model_name,
        "prompts": [{"text": p.text, "weight": p.weight} for p in prompts],
        "top_k": int(request.top_k),
        "image_prefix": request.image_prefix or None,
        "image_size": list(core.image_size),
        "score": "sum(w_j * cos(image, text_j)) / sum(|w_j|)",
        "truncated_prompts": truncated,
    }
    response.provenance.CopyFrom(_provenance(core, params, started))
    return response
