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


async def test_batcher_fails_only_the_request_that_breaks_a_shared_pass() -> None:
    def fail_on_negative(x: torch.Tensor) -> torch.Tensor:
        if (x < 0).any():
            raise RuntimeError("boom")
        return x * 2

    batcher = DynamicBatcher(fail_on_negative, max_batch=8, max_wait_ms=200.0)
    results = await asyncio.gather(
        batcher.submit(torch.tensor([1.0])),
        batcher.submit(torch.tensor([-1.0])),
        batcher.submit(torch.tensor([2.0, 3.0])),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    torch.testing.assert_close(results[0], torch.tensor([2.0]))  # as it would be alone
    torch.testing.assert_close(results[2], torch.tensor([4.0, 6.0]))
    # One shared pass of 4 rows failed; then each of its three requests ran alone.
    assert list(batcher.batch_rows) == [4, 1, 1, 2] and batcher.isolated_failures == 1
    torch.testing.assert_close(await batcher.submit(torch.tensor([3.0])), torch.tensor([6.0]))
    await batcher.aclose()


async def test_batcher_checks_each_request_and_never_mixes_row_shapes() -> None:
    def check(rows: torch.Tensor) -> None:
        if rows.dtype != torch.float32:
            raise ValueError("float32 rows only")

    batcher = DynamicBatcher(lambda x: x.sum(dim=1), max_batch=8, max_wait_ms=200.0, check=check)
    results = await asyncio.gather(
        batcher.submit(torch.ones(1, 2)),
        batcher.submit(torch.ones(2, 3)),  # another row shape: its own pass, not a failed cat
        batcher.submit(torch.ones(1, 2, dtype=torch.int64)),  # refused before it is queued
        batcher.submit(torch.ones(1, 2) * 2),
        return_exceptions=True,
    )
    assert isinstance(results[2], ValueError) and "float32 rows only" in str(results[2])
    torch.testing.assert_close(results[0], torch.tensor([2.0]))
    torch.testing.assert_close(results[1], torch.tensor([3.0, 3.0]))
    torch.testing.assert_close(results[3], torch.tensor([4.0]))
    assert sorted(batcher.batch_rows) == [2, 2] and batcher.isolated_failures == 0
    await batcher.aclose()


async def test_core_batchers_refuse_rows_the_towers_cannot_take(core: ClipCore) -> None:
    assert core.image_batcher is not None and core.text_batcher is not None
    with pytest.raises(ValueError, match=r"pixels must be floating \(N, 3, 32, 32\)"):
        await core.aembed_pixels(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 49408\)"):
        await core.text_batcher.submit(torch.full((1, 16), 10**6, dtype=torch.long))
    assert core.image_batcher.forward_calls == 0 and core.text_batcher.forward_calls == 0
    await core.aclose()


def test_tokenize_matches_open_clip_with_one_encode_per_text(
    core: ClipCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = ["short", " ".join(["portrait"] * 40), "a charcoal sketch, of a boy!"]
    expected = core.loaded.tokenizer(texts)
    tokenizer = core.loaded.tokenizer
    encoded: list[str] = []
    real = tokenizer.encode  # type: ignore[attr-defined]

    def counting(text: str) -> list[int]:
        encoded.append(text)
        return list(real(text))

    monkeypatch.setattr(tokenizer, "encode", counting)
    tokens, truncated = core.tokenize(texts)
    assert torch.equal(tokens, expected) and truncated == [1]
    assert encoded == texts  # one BPE pass per text, the truncation report included
    encoded.clear()
    _, cut = core.text_embeddings(texts + texts)  # repeated texts: encoded once, reported at each index
    assert cut == [1, 4] and encoded == texts
    encoded.clear()
    assert core.text_embeddings(texts)[1] == [1] and encoded == []  # cache hits keep their report


def test_extreme_aspect_ratios_are_cut_before_resizing(core: ClipCore) -> None:
    normal = noise_image(1, (64, 40))
    assert core.crop_extreme(normal) is normal  # within 2:1 of the model's square: untouched
    strip = noise_image(2, (1600, 20))  # open_clip alone would resize it to 2,560 x 32 first
    cut = core.crop_extreme(strip)
    assert cut.size == (40, 20)
    reference = core.loaded.preprocess(strip)
    torch.testing.assert_close(core.preprocess([strip])[0], reference, atol=0.15, rtol=0)
    assert (core.preprocess([strip])[0] - reference).abs().mean() < 0.01
