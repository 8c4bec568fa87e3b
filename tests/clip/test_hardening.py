"""The CLIP service under bad and heavy input, over real gRPC: isolation, text limits, memory."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import zlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ganfolk.runtime.metrics import process_memory
from ganfolk.v1 import clip_pb2, clip_pb2_grpc, common_pb2
from services.clip.core import ClipCore, Prompt
from services.clip.main import SERVICE
from tests.clip.conftest import Tiny, noise_image, png_bytes
from tests.fixtures.services import serving

MiB = 1 << 20


def rank_one(data: bytes, text: str = "a face") -> clip_pb2.RankRequest:
    return clip_pb2.RankRequest(
        prompts=[common_pb2.WeightedPrompt(text=text)], images=[common_pb2.ImageRef(inline_data=data)]
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width`` x ``height``, and nothing else."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


async def test_a_corrupt_image_fails_only_its_own_request_in_a_shared_batch(tiny: Tiny, tmp_path) -> None:
    # The pass starts once the four good rows are queued (or after 1 s), so they share one.
    env = tiny.env(clip_max_wait_ms=1000.0, clip_max_batch=4)
    async with serving(SERVICE, worker_enabled=False, store_url=str(tmp_path), **env) as (running, channel):
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        core: ClipCore = running.holder.get()
        await stub.EmbedTexts(clip_pb2.EmbedTextsRequest(texts=["a face"]))  # cached: images batch alone
        assert core.image_batcher is not None
        before = len(core.image_batcher.batch_rows)
        good = [noise_image(i) for i in range(4)]
        corrupt = png_bytes(noise_image(9))[:-40]  # truncated inside the pixel data
        requests = [rank_one(png_bytes(im)) for im in good[:2]]
        requests += [rank_one(corrupt)] + [rank_one(png_bytes(im)) for im in good[2:]]
        replies = await asyncio.gather(*(stub.Rank(r, timeout=60) for r in requests), return_exceptions=True)

        bad = replies[2]
        assert isinstance(bad, grpc.aio.AioRpcError) and bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "images[0]: corrupt image" in (bad.details() or "")
        assert list(core.image_batcher.batch_rows)[before:] == [4]  # the good ones shared one pass
        for reply, image in zip(replies[:2] + replies[3:], good, strict=True):
            assert isinstance(reply, clip_pb2.RankResponse)
            alone = float(core.rank([Prompt("a face")], [image])[0])  # no batcher, one image
            assert reply.ranked[0].score == pytest.approx(alone, abs=1e-5)


async def test_texts_over_the_length_limit_are_refused_before_tokenizing(
    tiny: Tiny, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(SERVICE, worker_enabled=False, store_url=str(tmp_path), **tiny.env()) as (
        running,
        channel,
    ):
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        tokenizer = running.holder.get().loaded.tokenizer
        encoded: list[int] = []
        real = tokenizer.encode  # type: ignore[attr-defined]

        def counting(text: str) -> list[int]:
            encoded.append(len(text))
            return list(real(text))

        monkeypatch.setattr(tokenizer, "encode", counting)

        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.EmbedTexts(clip_pb2.EmbedTextsRequest(texts=["ok", "x" * 10_000_000]), timeout=60)
        print(f"10 MB text refused in {time.perf_counter() - started:.3f} s")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "texts[1] is 10,000,000 characters, over the limit of 2,000 (GANFOLK_CLIP_MAX_TEXT_CHARS)" in (
            err.value.details() or ""
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Rank(rank_one(png_bytes(noise_image(0)), "y" * 2001), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "prompts[0].text is 2,001 characters" in (err.value.details() or "")
        assert encoded == []  # refused from its length: no tokenizing spent on it

        reply = await stub.EmbedTexts(clip_pb2.EmbedTextsRequest(texts=["z" * 2000]), timeout=60)
        assert len(reply.embeddings) == 1 and list(reply.provenance.parameters["truncated_texts"]) == [0]


async def test_health_answers_while_a_large_batch_of_text_is_tokenized(
    tiny: Tiny, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(SERVICE, worker_enabled=False, store_url=str(tmp_path), **tiny.env()) as (
        running,
        channel,
    ):
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        tokenizer = running.holder.get().loaded.tokenizer
        real = tokenizer.encode  # type: ignore[attr-defined]
        threads: list[int] = []
        started, release = threading.Event(), threading.Event()

        def gated(text: str) -> list[int]:
            threads.append(threading.get_ident())
            if len(threads) == 1:
                started.set()
                release.wait(60)  # hold the tokenizer until the health check has answered
            return list(real(text))

        monkeypatch.setattr(tokenizer, "encode", gated)
        # The largest request allowed: 256 distinct texts of 2,000 characters.
        texts = [f"{i} " + " ".join(["portrait of a weathered fisherman"] * 60)[:1990] for i in range(256)]
        call = asyncio.ensure_future(stub.EmbedTexts(clip_pb2.EmbedTextsRequest(texts=texts), timeout=120))
        try:
            assert await asyncio.to_thread(started.wait, 60)
            # Were tokenizing on the event loop, this check could not be answered until release.
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert not call.done()
        finally:
            release.set()
        latencies = []
        while not call.done():
            t = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
            latencies.append(time.perf_counter() - t)
            await asyncio.sleep(0.01)
        result = await call
        if latencies:
            print(
                f"health checks during tokenizing: {len(latencies)}, slowest {max(latencies) * 1000:.0f} ms"
            )
    assert len(result.embeddings) == 256
    assert len(threads) == 256  # each text encoded once
    assert threading.get_ident() not in threads  # never on the event loop's thread


async def test_memory_stays_bounded_under_repeated_bad_input(tiny: Tiny, tmp_path) -> None:
    """Oversized, corrupt, extreme and over-long inputs, ten rounds: resident memory levels off."""
    async with serving(SERVICE, worker_enabled=False, store_url=str(tmp_path), **tiny.env()) as (_, channel):
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        strip = png_bytes(noise_image(5, (6000, 2)))  # open_clip alone: 32 x 96,000 px before the crop
        bad = [
            rank_one(png_header_only(20_000, 20_000)),  # 400 MP from its header: refused undecoded
            rank_one(png_bytes(noise_image(6))[:-40]),
            clip_pb2.EmbedTextsRequest(texts=["w" * 300_000]),
        ]
        rss: list[int] = []
        for _ in range(10):
            for request in bad:
                call = stub.EmbedTexts if isinstance(request, clip_pb2.EmbedTextsRequest) else stub.Rank
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(request, timeout=60)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            reply = await stub.Rank(rank_one(strip), timeout=60)
            assert reply.ranked[0].image.width == 6000
            rss.append(process_memory()["rss"])
    print("RSS per round (MiB):", [round(r / MiB) for r in rss])
    assert rss[9] - rss[2] < 32 * MiB, [round(r / MiB) for r in rss]


async def test_decoding_is_gated_across_concurrent_requests(
    tiny: Tiny, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many requests arrive together, at most READ_CONCURRENCY images are decoded at once."""
    from services.clip import ops

    real = ops.read_image_sync
    lock = threading.Lock()
    active, most = [0], [0]

    def counting(*args: object, **kwargs: object) -> object:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(0.02)  # long enough for the requests' reads to overlap if they could
            return real(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(ops, "read_image_sync", counting)
    env = tiny.env(clip_read_concurrency=2)
    async with serving(SERVICE, worker_enabled=False, store_url=str(tmp_path), **env) as (_, channel):
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        images = [common_pb2.ImageRef(inline_data=png_bytes(noise_image(i))) for i in range(4)]
        replies = await asyncio.gather(
            *(stub.EmbedImages(clip_pb2.EmbedImagesRequest(images=images), timeout=60) for _ in range(4))
        )
    assert all(len(r.embeddings) == 4 for r in replies)
    assert most[0] == 2
