"""The CLIP service over real gRPC on loopback: embeddings, ranking, bad input, start-up errors."""

from __future__ import annotations

import grpc
import pytest
import torch

from ganfolk.runtime.images import store_image_sync
from ganfolk.runtime.settings import ConfigError
from ganfolk.runtime.storage import LocalStore
from ganfolk.v1 import clip_pb2, clip_pb2_grpc, common_pb2, info_pb2, info_pb2_grpc
from services.clip.core import ClipCore, Prompt
from services.clip.main import SERVICE
from tests.clip.conftest import Tiny, noise_image, png_bytes
from tests.fixtures.services import serving


def inline(i: int) -> common_pb2.ImageRef:
    return common_pb2.ImageRef(inline_data=png_bytes(noise_image(i)))


def prompt(text: str, weight: float | None = None) -> common_pb2.WeightedPrompt:
    p = common_pb2.WeightedPrompt(text=text)
    if weight is not None:
        p.weight = weight
    return p


async def test_embed_and_rank_end_to_end(tiny: Tiny, tmp_path) -> None:
    async with serving(SERVICE, worker_enabled=False, store_url=str(tmp_path), **tiny.env()) as (
        running,
        channel,
    ):
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        core: ClipCore = running.holder.get()

        texts = await stub.EmbedTexts(clip_pb2.EmbedTextsRequest(texts=["a photo of a cat", "a rocket"]))
        assert texts.dim == 16 and len(texts.embeddings) == 2
        rows = torch.tensor([list(e.values) for e in texts.embeddings])
        torch.testing.assert_close(rows.norm(dim=1), torch.ones(2))
        assert (
            texts.provenance.models[0].sha256 == tiny.sha256 and not texts.provenance.models[0].random_weights
        )

        images = await stub.EmbedImages(clip_pb2.EmbedImagesRequest(images=[inline(i) for i in range(3)]))
        got = torch.tensor([list(e.values) for e in images.embeddings])
        torch.testing.assert_close(
            got, core.embed_images([noise_image(i) for i in range(3)]), atol=1e-5, rtol=1e-5
        )

        # Rank: inline images and one by URI; two prompts, one negative.
        store = LocalStore(tmp_path)
        by_uri = store_image_sync(store, "inputs/seed-7.png", noise_image(7))
        refs = [inline(i) for i in range(5)] + [by_uri]
        request = clip_pb2.RankRequest(
            prompts=[prompt("a charcoal sketch of a boy"), prompt("blurry", -0.5)], images=refs, top_k=4
        )
        reply = await stub.Rank(request)
        expected = core.rank(
            [Prompt("a charcoal sketch of a boy"), Prompt("blurry", -0.5)],
            [noise_image(i) for i in (0, 1, 2, 3, 4, 7)],
        )
        order = torch.argsort(expected, descending=True)[:4].tolist()
        assert reply.total == 6 and [r.index for r in reply.ranked] == order
        for r in reply.ranked:
            assert r.score == pytest.approx(float(expected[r.index]), abs=1e-5)
            assert r.image.width == 40 and r.image.height == 48 and r.image.sha256
            assert not r.image.inline_data  # inline bytes are not echoed back
        uri_hits = [r for r in reply.ranked if r.index == 5]
        assert not uri_hits or uri_hits[0].image.uri == by_uri.uri
        params = reply.provenance.parameters
        assert params["top_k"] == 4 and params["prompts"][1]["weight"] == -0.5

        # Rank every image under a prefix.
        for i in range(3):
            store_image_sync(store, f"job-1/samples/seed-{i}.png", noise_image(100 + i))
        store.put("job-1/samples/notes.txt", b"not an image")
        reply = await stub.Rank(
            clip_pb2.RankRequest(prompts=[prompt("a face")], image_prefix="job-1/samples")
        )
        assert reply.total == 3 and len(reply.ranked) == 3
        assert {r.image.uri for r in reply.ranked} == {
            store.uri(f"job-1/samples/seed-{i}.png") for i in range(3)
        }
        assert [r.score for r in reply.ranked] == sorted((r.score for r in reply.ranked), reverse=True)


BAD_REQUESTS = [
    (clip_pb2.RankRequest(images=[inline(0)]), "no prompts"),
    (clip_pb2.RankRequest(prompts=[prompt("  ")], images=[inline(0)]), "prompts[0].text is empty"),
    (clip_pb2.RankRequest(prompts=[prompt("a", 0.0)], images=[inline(0)]), "all prompt weights are 0"),
    (clip_pb2.RankRequest(prompts=[prompt("a")]), "no images"),
    (
        clip_pb2.RankRequest(prompts=[prompt("a")], images=[inline(0), common_pb2.ImageRef()]),
        "images[1]: image reference is empty",
    ),
    (
        clip_pb2.RankRequest(
            prompts=[prompt("a")], images=[common_pb2.ImageRef(inline_data=b"GIF89a-garbage")]
        ),
        "images[0]:",
    ),
    (
        clip_pb2.RankRequest(prompts=[prompt("a")], images=[common_pb2.ImageRef(inline_data=b"hello world")]),
        "images[0]: not an image",
    ),
    (clip_pb2.RankRequest(prompts=[prompt("a")], images=[inline(0)] * 5), "at most 4 per request"),
    (clip_pb2.RankRequest(prompts=[prompt("a")], images=[inline(0)], top_k=3), "top_k=3 is more than the 1"),
    (
        clip_pb2.RankRequest(prompts=[prompt("a")], images=[inline(0)], image_prefix="x"),
        "either images or image_prefix",
    ),
    (clip_pb2.RankRequest(prompts=[prompt("a")], image_prefix="empty/dir"), "no image objects under"),
]


async def test_bad_input_is_invalid_argument_with_what_to_fix(tiny: Tiny, tmp_path) -> None:
    env = tiny.env(clip_max_images=4)
    async with serving(SERVICE, worker_enabled=False, store_url=str(tmp_path), **env) as (_, channel):
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        for request, message in BAD_REQUESTS:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Rank(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
            assert message in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.EmbedTexts(clip_pb2.EmbedTextsRequest(texts=["ok", ""]))
        assert (
            err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            and "texts[1] is empty" in err.value.details()
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.EmbedImages(clip_pb2.EmbedImagesRequest())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no images" in err.value.details()
        # Prompts past the context length are truncated and reported.
        reply = await stub.EmbedTexts(clip_pb2.EmbedTextsRequest(texts=["short", " ".join(["face"] * 40)]))
        assert list(reply.provenance.parameters["truncated_texts"]) == [1]


async def test_random_weights_are_marked_in_provenance(tiny: Tiny, tmp_path) -> None:
    env = tiny.env(clip_checkpoint=None, clip_checkpoint_sha256=None, allow_random_weights=True)
    async with serving(SERVICE, worker_enabled=False, store_url=str(tmp_path), **env) as (_, channel):
        reply = await clip_pb2_grpc.ClipServiceStub(channel).Rank(
            clip_pb2.RankRequest(prompts=[prompt("a")], images=[inline(0)])
        )
        assert reply.provenance.models[0].random_weights
        info = await info_pb2_grpc.InfoServiceStub(channel).GetInfo(info_pb2.GetInfoRequest())
        assert info.random_weights and info.models[0].name == "tiny-clip-test"


async def test_missing_checkpoint_stops_start_up_naming_the_variable(tiny: Tiny, tmp_path) -> None:
    with pytest.raises(ConfigError, match="GANFOLK_CLIP_CHECKPOINT"):
        async with serving(
            SERVICE, worker_enabled=False, store_url=str(tmp_path), **tiny.env(clip_checkpoint=None)
        ):
            pass
    absent = tiny.env(clip_checkpoint=str(tmp_path / "absent.pt"), clip_checkpoint_sha256=None)
    with pytest.raises(ConfigError, match=r"GANFOLK_CLIP_CHECKPOINT.*absent\.pt"):
        async with serving(SERVICE, worker_enabled=False, store_url=str(tmp_path), **absent):
            pass
