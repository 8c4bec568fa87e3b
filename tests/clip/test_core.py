"""ClipCore: normalised embeddings, cosine ranking, weights, text cache, dynamic batching."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from services.clip.batcher import DynamicBatcher
from services.clip.core import ClipCore, Prompt
from tests.clip.conftest import noise_image

PROMPTS = ["a charcoal sketch of a Turkish boy", "a photo of a cat", "an oil painting of a rocket"]


def manual_cosines(core: ClipCore, texts: list[str], images: list) -> torch.Tensor:
    """cos(image_i, text_j) straight from the open_clip model, its preprocess and tokenizer."""
    model, preprocess, tokenizer = core.loaded
    with torch.no_grad():
        t = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
        v = F.normalize(model.encode_image(torch.stack([preprocess(im) for im in images])), dim=-1)
    return v @ t.T


def test_embeddings_are_l2_normalised(core: ClipCore) -> None:
    texts = core.embed_texts(PROMPTS)
    images = core.embed_images([noise_image(i) for i in range(5)])
    assert texts.shape == (3, core.dim) and images.shape == (5, core.dim) and core.dim == 16
    torch.testing.assert_close(texts.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(images.norm(dim=1), torch.ones(5))


def test_minibatches_give_the_same_rows(core: ClipCore) -> None:
    images = [noise_image(i) for i in range(7)]
    many = core.embed_images(images)
    core.settings = core.settings.model_copy(update={"clip_image_batch_size": 3})
    calls: list[int] = []
    encode = core.encode_pixels
    core.encode_pixels = lambda p: calls.append(len(p)) or encode(p)  # type: ignore[method-assign]
    torch.testing.assert_close(core.embed_images(images), many, atol=1e-5, rtol=1e-5)
    assert calls == [3, 3, 1]


def test_rank_matches_manual_cosine(core: ClipCore) -> None:
    images = [noise_image(i) for i in range(12)]
    scores = core.rank([Prompt(PROMPTS[1])], images)
    expected = manual_cosines(core, [PROMPTS[1]], images)[:, 0]
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    assert list(np.argsort(-scores.numpy(), kind="stable")) == list(
        np.argsort(-expected.numpy(), kind="stable")
    )


def test_weighted_and_negative_prompts(core: ClipCore) -> None:
    images = [noise_image(i) for i in range(10)]
    cos = manual_cosines(core, PROMPTS[:2], images)
    scores = core.rank([Prompt(PROMPTS[0], 2.0), Prompt(PROMPTS[1], -0.5)], images)
    torch.testing.assert_close(scores, (2.0 * cos[:, 0] - 0.5 * cos[:, 1]) / 2.5, atol=1e-5, rtol=1e-5)
    # A single negative prompt ranks the images in exactly the opposite order.
    pos = core.rank([Prompt(PROMPTS[0])], images)
    neg = core.rank([Prompt(PROMPTS[0], -1.0)], images)
    torch.testing.assert_close(neg, -pos)
    with pytest.raises(ValueError, match="not all zero"):
        core.rank([Prompt(PROMPTS[0], 0.0)], images)


def test_text_cache_hits_skip_the_model(core: ClipCore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    encode = core.encode_tokens

    def counting(tokens: torch.Tensor) -> torch.Tensor:
        calls.append(len(tokens))
        return encode(tokens)

    monkeypatch.setattr(core, "encode_tokens", counting)
    first = core.embed_texts(PROMPTS)
    assert calls == [3] and core.cache.misses == 3 and core.cache.hits == 0
    again = core.embed_texts([PROMPTS[2], PROMPTS[0], "a new prompt"])
    assert calls == [3, 1] and core.cache.hits == 2
    torch.testing.assert_close(again[:2], first[[2, 0]])


async def test_async_text_cache_and_lru_eviction(make_core: Callable[..., ClipCore]) -> None:
    core = make_core(clip_text_cache_size=2)
    a = await core.aembed_texts(["one", "two"])
    await core.aembed_texts(["three"])  # evicts "one"
    assert len(core.cache) == 2
    hits = core.cache.hits
    b = await core.aembed_texts(["two"])
    assert core.cache.hits == hits + 1
    torch.testing.assert_close(b[0], a[1])
    await core.aembed_texts(["one"])
    assert core.cache.hits == hits + 1  # "one" was evicted: recomputed
    torch.testing.assert_close(core.embed_texts(["one"])[0], a[0])
    await core.aclose()


def test_long_prompts_are_reported_as_truncated(core: ClipCore) -> None:
    long = " ".join(["portrait"] * 40)
    tokens, truncated = core.tokenize(["short", long])
    assert tokens.shape == (2, 16) and truncated == [1]


def test_sampler_tensors_are_converted_like_pil_images(core: ClipCore) -> None:
    rng = np.random.default_rng(0)
    for h, w in ((32, 32), (64, 80)):
        pixels = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
        from_tensor = core.pixels_from_tensor(tensor)
        from PIL import Image

        from_pil = core.preprocess([Image.fromarray(p) for p in pixels])
        assert from_tensor.shape == from_pil.shape == (2, 3, 32, 32)
        if (h, w) == (32, 32):
            torch.testing.assert_close(from_tensor, from_pil, atol=1e-5, rtol=1e-5)
        else:  # torch's and Pillow's antialiased bicubic differ by rounding only
            assert (from_tensor - from_pil).abs().mean() < 0.05
    embs = core.embed_images(tensor)
    torch.testing.assert_close(embs.norm(dim=1), torch.ones(2))


async def test_dynamic_batching_merges_concurrent_requests(make_core: Callable[..., ClipCore]) -> None:
    core = make_core(clip_max_wait_ms=200.0, clip_max_batch=64)
    images = [noise_image(i) for i in range(8)]
    alone = core.embed_images(images)  # one image per forward, no batcher
    assert core.image_batcher is not None
    before = core.image_batcher.forward_calls
    # Eight concurrent callers with one image each, plus one with three.
    results = await asyncio.gather(
        *(core.aembed_images([im]) for im in images), core.aembed_images(images[:3])
    )
    assert core.image_batcher.forward_calls - before == 1
    assert core.image_batcher.batch_rows[-1] == 11
    for i, rows in enumerate(results[:8]):
        assert rows.shape == (1, core.dim)
        torch.testing.assert_close(rows[0], alone[i], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[8], alone[:3], atol=1e-5, rtol=1e-5)
    await core.aclose()


async def test_batcher_respects_max_batch_and_splits_large_requests() -> None:
    sizes: list[int] = []

    def double(x: torch.Tensor) -> torch.Tensor:
        sizes.append(len(x))
        return x * 2

    batcher = DynamicBatcher(double, max_batch=4, max_wait_ms=100.0)
    out = await asyncio.gather(
        batcher.submit(torch.arange(10.0)), *(batcher.submit(torch.tensor([float(i)])) for i in range(3))
    )
    torch.testing.assert_close(out[0], torch.arange(10.0) * 2)
    assert [float(o[0]) for o in out[1:]] == [0.0, 2.0, 4.0]
    assert max(sizes) <= 4 and sum(sizes) == 13 and len(sizes) == 4
    await batcher.aclose()


async def test_batcher_hands_errors_to_every_caller_and_keeps_going() -> None:
    def fail_on_negative(x: torch.Tensor) -> torch.Tensor:
        if (x < 0).any():
            raise RuntimeError("boom")
        return x

    batcher = DynamicBatcher(fail_on_negative, max_batch=8, max_wait_ms=50.0)
    results = await asyncio.gather(
        batcher.submit(torch.tensor([1.0])), batcher.submit(torch.tensor([-1.0])), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    torch.testing.assert_close(await batcher.submit(torch.tensor([3.0])), torch.tensor([3.0]))
    await batcher.aclose()
