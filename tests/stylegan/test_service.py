"""StyleGAN2 service over real gRPC and a real nats-server, with the golden checkpoint."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from nats.aio.client import Client as NATS
from PIL import Image

from ganfolk.runtime import jetstream
from ganfolk.runtime.settings import ConfigError
from ganfolk.runtime.storage import open_store
from ganfolk.v1 import common_pb2, events_pb2, stylegan_pb2, stylegan_pb2_grpc
from services.stylegan.main import SERVICE
from tests.fixtures import golden
from tests.fixtures.services import serving

GOLDEN = golden.path("stylegan2_tiny.pt")


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture
def service_env(tmp_path: Path) -> dict[str, Any]:
    return {"store_url": str(tmp_path / "objects"), "worker_enabled": False}


async def test_sample_is_deterministic_across_batch_sizes(
    monkeypatch: pytest.MonkeyPatch, service_env
) -> None:
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(GOLDEN))
    async with serving(SERVICE, **service_env) as (_, channel):
        stub = stylegan_pb2_grpc.StyleGANServiceStub(channel)
        one = await stub.Sample(
            stylegan_pb2.SampleRequest(
                seed_list=stylegan_pb2.SeedList(seeds=[5, 6, 7]), batch_size=1, inline_images=True
            )
        )
        three = await stub.Sample(
            stylegan_pb2.SampleRequest(
                seed_range=stylegan_pb2.SeedRange(start=5, count=3),
                batch_size=3,
                inline_images=True,
                return_latents=True,
            )
        )
    assert [s.seed for s in one.samples] == [5, 6, 7] == [s.seed for s in three.samples]
    for a, b in zip(one.samples, three.samples, strict=True):
        # Same z per seed at any batch size; batched float32 convs may round one level apart.
        diff = np.abs(pixels(a.image.inline_data).astype(int) - pixels(b.image.inline_data).astype(int))
        assert diff.max() <= 1, f"seed {a.seed}: max pixel difference {diff.max()}"
        assert a.image.width == a.image.height == 32 and a.image.WhichOneof("source") == "inline_data"
    assert len(three.samples[0].w_latent) == 64
    assert not np.array_equal(
        pixels(one.samples[0].image.inline_data), pixels(one.samples[1].image.inline_data)
    )
    prov = three.provenance
    assert prov.seeds == [5, 6, 7] and prov.models[0].name == "stylegan2-rosinality"
    assert not prov.models[0].random_weights


async def test_truncation_and_noise_modes(monkeypatch: pytest.MonkeyPatch, service_env) -> None:
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(GOLDEN))
    async with serving(SERVICE, **service_env) as (_, channel):
        stub = stylegan_pb2_grpc.StyleGANServiceStub(channel)

        async def one(**kw: Any) -> np.ndarray:
            reply = await stub.Sample(
                stylegan_pb2.SampleRequest(
                    seed_list=stylegan_pb2.SeedList(seeds=[1]), inline_images=True, **kw
                )
            )
            return pixels(reply.samples[0].image.inline_data)

        base = await one()
        assert np.array_equal(base, await one())
        assert not np.array_equal(base, await one(truncation_psi=0.5))
        noisy = await one(noise_mode=stylegan_pb2.NOISE_MODE_RANDOM)
        assert np.array_equal(noisy, await one(noise_mode=stylegan_pb2.NOISE_MODE_RANDOM))
        assert not np.array_equal(base, noisy)
        assert not np.array_equal(
            base, await one(latent_distribution=stylegan_pb2.LATENT_DISTRIBUTION_NORMAL)
        )


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({}, "set seed_list or seed_range"),
        ({"seed_range": stylegan_pb2.SeedRange(start=0, count=0)}, "count must be at least 1"),
        (
            {"seed_range": stylegan_pb2.SeedRange(start=0, count=5000)},
            "over the limit of 1,000 seeds per request",
        ),
        ({"seed_list": stylegan_pb2.SeedList(seeds=[-1])}, "seeds must be >= 0"),
        (
            {"seed_list": stylegan_pb2.SeedList(seeds=[1]), "truncation_psi": 1.5},
            "truncation_psi must be in [0, 1]",
        ),
        ({"seed_list": stylegan_pb2.SeedList(seeds=[1]), "output_prefix": "../escape"}, "key"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    monkeypatch: pytest.MonkeyPatch, service_env, request_kwargs: dict[str, Any], message: str
) -> None:
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(GOLDEN))
    async with serving(SERVICE, **service_env) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stylegan_pb2_grpc.StyleGANServiceStub(channel).Sample(
                stylegan_pb2.SampleRequest(**request_kwargs)
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


async def test_missing_checkpoint_stops_startup(monkeypatch: pytest.MonkeyPatch, service_env) -> None:
    monkeypatch.delenv("GANFOLK_STYLEGAN_CHECKPOINT", raising=False)
    monkeypatch.delenv("GANFOLK_ALLOW_RANDOM_WEIGHTS", raising=False)
    with pytest.raises(ConfigError, match="GANFOLK_STYLEGAN_CHECKPOINT is required"):
        async with serving(SERVICE, **service_env):
            pass
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(service_env["store_url"]) + "/nope.pt")
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        async with serving(SERVICE, **service_env):
            pass


async def test_random_weights_are_marked(monkeypatch: pytest.MonkeyPatch, service_env) -> None:
    monkeypatch.delenv("GANFOLK_STYLEGAN_CHECKPOINT", raising=False)
    monkeypatch.setenv("GANFOLK_ALLOW_RANDOM_WEIGHTS", "1")
    monkeypatch.setenv("GANFOLK_STYLEGAN_RANDOM_SIZE", "32")
    async with serving(SERVICE, **service_env) as (_, channel):
        reply = await stylegan_pb2_grpc.StyleGANServiceStub(channel).Sample(
            stylegan_pb2.SampleRequest(seed_list=stylegan_pb2.SeedList(seeds=[0]))
        )
    assert reply.provenance.models[0].random_weights


async def test_sample_stage_over_nats_into_s3(
    monkeypatch: pytest.MonkeyPatch, nc: NATS, nats_server: Any, s3_server: Any
) -> None:
    bucket = f"samples-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(GOLDEN))
    monkeypatch.setenv("GANFOLK_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("GANFOLK_S3_SECRET_KEY", s3_server.secret_key)
    store_url = f"s3://{bucket}?endpoint={s3_server.endpoint}&secure=false"
    job = f"job-{uuid.uuid4().hex[:8]}"
    events = await nc.subscribe(jetstream.event_subject(job))
    async with serving(SERVICE, store_url=store_url, nats_url=nats_server.url):
        meta = common_pb2.TaskMeta(
            job_id=job, task_id=f"{job}.sample.0", stage="sample", output_prefix=f"{job}/s0"
        )
        task = stylegan_pb2.SampleRequest(seed_range=stylegan_pb2.SeedRange(start=10, count=4), meta=meta)
        await jetstream.publish_task(nc.jetstream(), "sample", task.SerializeToString(), meta.task_id)
        event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=60)).data)
    assert event.WhichOneof("outcome") == "result"
    samples = event.result.sample.samples
    assert [s.seed for s in samples] == [10, 11, 12, 13]
    store = open_store(store_url, access_key=s3_server.access_key, secret_key=s3_server.secret_key)
    data = store.get_uri(samples[0].image.uri, samples[0].image.sha256)
    assert pixels(data).shape == (32, 32, 3)
    assert samples[0].image.uri == f"s3://{bucket}/{job}/s0/seed-10.png"


async def test_checkpoint_from_object_store_uri_with_checksum(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ganfolk.runtime.hashing import file_sha256

    store_url = str(tmp_path / "objects")
    store = open_store(store_url)
    info = store.put_file("weights/stylegan2_tiny.pt", GOLDEN)
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", info.uri)
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT_SHA256", file_sha256(GOLDEN))
    monkeypatch.setenv("GANFOLK_STATE_DIR", str(tmp_path / "state"))
    async with serving(SERVICE, store_url=store_url, worker_enabled=False) as (_, channel):
        reply = await stylegan_pb2_grpc.StyleGANServiceStub(channel).Sample(
            stylegan_pb2.SampleRequest(seed_list=stylegan_pb2.SeedList(seeds=[3]))
        )
    assert reply.provenance.models[0].sha256 == file_sha256(GOLDEN)
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        async with serving(SERVICE, store_url=store_url, worker_enabled=False):
            pass


async def test_info_reports_random_weights(monkeypatch: pytest.MonkeyPatch, service_env) -> None:
    from ganfolk.v1 import info_pb2, info_pb2_grpc

    monkeypatch.setenv("GANFOLK_ALLOW_RANDOM_WEIGHTS", "1")
    monkeypatch.setenv("GANFOLK_STYLEGAN_RANDOM_SIZE", "32")
    monkeypatch.delenv("GANFOLK_STYLEGAN_CHECKPOINT", raising=False)
    async with serving(SERVICE, **service_env) as (_, channel):
        info = await info_pb2_grpc.InfoServiceStub(channel).GetInfo(info_pb2.GetInfoRequest())
    assert info.ready and info.random_weights and info.service == "stylegan"
    assert info.models[0].name == "stylegan2-rosinality" and info.device == "cpu"
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(GOLDEN))
    async with serving(SERVICE, **service_env) as (_, channel):
        info = await info_pb2_grpc.InfoServiceStub(channel).GetInfo(info_pb2.GetInfoRequest())
    assert info.ready and not info.random_weights


async def test_inline_images_are_encoded_once_and_stored(
    monkeypatch: pytest.MonkeyPatch, service_env: dict[str, Any]
) -> None:
    """The returned bytes are the stored object's bytes: one PNG encode per sample, not two."""
    from ganfolk.runtime import images

    encodes: list[int] = []
    real = images.encode_png

    def counting(img: Any) -> bytes:
        encodes.append(1)
        return real(img)

    monkeypatch.setattr(images, "encode_png", counting)
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(GOLDEN))
    async with serving(SERVICE, **service_env) as (_, channel):
        stub = stylegan_pb2_grpc.StyleGANServiceStub(channel)
        reply = await stub.Sample(
            stylegan_pb2.SampleRequest(
                seed_list=stylegan_pb2.SeedList(seeds=[1, 2, 3, 4]), inline_images=True, output_prefix="shard"
            )
        )
    assert len(encodes) == 4
    store = open_store(service_env["store_url"])
    for s in reply.samples:
        assert s.image.WhichOneof("source") == "inline_data"
        assert store.get(f"direct/shard/seed-{s.seed}.png", s.image.sha256) == s.image.inline_data


async def test_seed_limits_are_checked_before_any_work(
    monkeypatch: pytest.MonkeyPatch, service_env: dict[str, Any]
) -> None:
    """Counts and int64 bounds fail fast, with nothing built or stored; direct calls never write
    into a job's folder, and land under direct/."""
    import time
    import tracemalloc

    from services.stylegan.ops import MAX_SEED

    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(GOLDEN))
    store = open_store(service_env["store_url"])
    minted = store.put("jobs/x/samples/seed-1.png", b"the job's own sample")
    bad = [
        # 10**9 seeds once cost a tuple of them (~36 GB) before the limit was checked.
        (
            stylegan_pb2.SampleRequest(seed_range=stylegan_pb2.SeedRange(start=0, count=10**9)),
            "over the limit",
        ),
        (
            stylegan_pb2.SampleRequest(seed_range=stylegan_pb2.SeedRange(start=MAX_SEED, count=2)),
            "runs past the largest seed",
        ),
        (
            stylegan_pb2.SampleRequest(seed_range=stylegan_pb2.SeedRange(start=MAX_SEED - 998, count=1000)),
            "runs past the largest seed",
        ),
        (
            stylegan_pb2.SampleRequest(seed_list=stylegan_pb2.SeedList(seeds=range(1001))),
            "seed_list has 1,001",
        ),
        (
            stylegan_pb2.SampleRequest(
                seed_list=stylegan_pb2.SeedList(seeds=[1]), output_prefix="jobs/x/samples"
            ),
            "only the tasks of that job write",
        ),
        (
            # A direct caller's TaskMeta is not a task: it cannot claim the job either.
            stylegan_pb2.SampleRequest(
                seed_list=stylegan_pb2.SeedList(seeds=[1]),
                meta=common_pb2.TaskMeta(job_id="x", task_id="x.sample.0", output_prefix="jobs/x/samples"),
            ),
            "only the tasks of that job write",
        ),
    ]
    async with serving(SERVICE, **service_env) as (_, channel):
        stub = stylegan_pb2_grpc.StyleGANServiceStub(channel)
        for request, message in bad:
            tracemalloc.start()
            started = time.perf_counter()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Sample(request)
            seconds = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert message in (err.value.details() or "")
            assert peak < 8 << 20, f"{message}: {peak:,} bytes allocated"
            assert seconds < 5, f"{message}: {seconds:.1f} s"
        assert [i.key for i in store.list()] == ["jobs/x/samples/seed-1.png"]

        # The largest seed itself is fine, and a direct call's prefix lands under direct/.
        top = await stub.Sample(
            stylegan_pb2.SampleRequest(
                seed_range=stylegan_pb2.SeedRange(start=MAX_SEED, count=1), output_prefix="mine"
            )
        )
    assert [s.seed for s in top.samples] == [MAX_SEED]
    assert top.samples[0].image.uri == store.uri(f"direct/mine/seed-{MAX_SEED}.png")
    assert store.get("jobs/x/samples/seed-1.png", minted.sha256) == b"the job's own sample"
