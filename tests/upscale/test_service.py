"""Finishing service over real gRPC and a real nats-server."""

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
from skimage import data as skdata

from ganfolk.runtime import jetstream
from ganfolk.runtime.images import encode_png
from ganfolk.runtime.storage import open_store
from ganfolk.v1 import common_pb2, events_pb2, upscale_pb2, upscale_pb2_grpc
from services.upscale.main import SERVICE
from tests.fixtures.services import serving

from .test_rrdbnet import CKPT

LANCZOS = upscale_pb2.SUPER_RESOLUTION_BACKEND_LANCZOS


def portrait(size: int = 64) -> bytes:
    return encode_png(np.asarray(Image.fromarray(skdata.astronaut()).resize((size, size), Image.LANCZOS)))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


async def test_finish_lanczos_sizes_and_provenance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GANFOLK_UPSCALE_BACKEND", "lanczos")
    async with serving(SERVICE, store_url=str(tmp_path / "objects"), worker_enabled=False) as (_, channel):
        stub = upscale_pb2_grpc.UpscaleServiceStub(channel)
        request = upscale_pb2.FinishRequest(
            image=common_pb2.ImageRef(inline_data=portrait(64)), inline_result=True, params={"noise_seed": 3}
        )
        one = await stub.Finish(request)
        two = await stub.Finish(request)
        other = await stub.Finish(
            upscale_pb2.FinishRequest(
                image=common_pb2.ImageRef(inline_data=portrait(64)),
                inline_result=True,
                params={"noise_seed": 4},
            )
        )
    img = pixels(one.image.inline_data)
    assert img.shape == (256, 256, 3) and (one.image.width, one.image.height) == (256, 256)
    assert np.array_equal(img, pixels(two.image.inline_data))  # same noise seed, same pixels
    assert not np.array_equal(img, pixels(other.image.inline_data))
    assert list(one.provenance.fallbacks) == ["lanczos"]
    assert "vignette" in one.provenance.parameters["steps"]


async def test_finish_with_rrdbnet_checkpoint_and_stored_input(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ganfolk.runtime.hashing import file_sha256

    monkeypatch.setenv("GANFOLK_UPSCALE_CHECKPOINT", str(CKPT))
    monkeypatch.setenv("GANFOLK_UPSCALE_CHECKPOINT_SHA256", file_sha256(Path(CKPT)))
    store_url = str(tmp_path / "objects")
    info = open_store(store_url).put("in/portrait.png", portrait(32), content_type="image/png")
    async with serving(SERVICE, store_url=store_url, worker_enabled=False) as (_, channel):
        reply = await upscale_pb2_grpc.UpscaleServiceStub(channel).Finish(
            upscale_pb2.FinishRequest(
                image=common_pb2.ImageRef(uri=info.uri, sha256=info.sha256),
                params={"backend": upscale_pb2.SUPER_RESOLUTION_BACKEND_TORCH_RRDBNET, "unsharp": True},
                output_prefix="out/a",
            )
        )
    assert (reply.image.width, reply.image.height) == (128, 128)
    assert reply.image.uri.endswith("out/a/final.png")
    assert reply.provenance.models[0].name.startswith("torch-rrdbnet")
    assert not reply.provenance.fallbacks


@pytest.mark.parametrize(
    ("image", "params", "message"),
    [
        (common_pb2.ImageRef(inline_data=b"definitely not a png"), {}, "not an image"),
        (common_pb2.ImageRef(), {}, "set uri or inline_data"),
        (common_pb2.ImageRef(inline_data=portrait(64)), {"scale": 3}, "scale must be 1, 2 or 4"),
        (common_pb2.ImageRef(inline_data=portrait(64)), {"vignette_strength": 2.0}, "vignette_strength"),
        (
            common_pb2.ImageRef(inline_data=portrait(64)),
            {"backend": upscale_pb2.SUPER_RESOLUTION_BACKEND_TORCH_RRDBNET},
            "GANFOLK_UPSCALE_CHECKPOINT",
        ),
    ],
)
async def test_bad_input_is_invalid_argument(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    image: common_pb2.ImageRef,
    params: dict[str, Any],
    message: str,
) -> None:
    monkeypatch.setenv("GANFOLK_UPSCALE_BACKEND", "lanczos")
    async with serving(SERVICE, store_url=str(tmp_path / "objects"), worker_enabled=False) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await upscale_pb2_grpc.UpscaleServiceStub(channel).Finish(
                upscale_pb2.FinishRequest(image=image, params=params)
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


async def test_over_pixel_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GANFOLK_UPSCALE_BACKEND", "lanczos")
    monkeypatch.setenv("GANFOLK_UPSCALE_MAX_INPUT_PIXELS", str(32 * 32))
    async with serving(SERVICE, store_url=str(tmp_path / "objects"), worker_enabled=False) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await upscale_pb2_grpc.UpscaleServiceStub(channel).Finish(
                upscale_pb2.FinishRequest(image=common_pb2.ImageRef(inline_data=portrait(64)))
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "64x64 = 4,096 pixels, over the limit of 1,024" in (err.value.details() or "")


async def test_finish_stage_over_nats(
    monkeypatch: pytest.MonkeyPatch, nc: NATS, nats_server: Any, tmp_path: Path
) -> None:
    monkeypatch.setenv("GANFOLK_UPSCALE_BACKEND", "lanczos")
    store_url = str(tmp_path / "objects")
    info = open_store(store_url).put("jobs/x/best.png", portrait(32), content_type="image/png")
    job = f"job-{uuid.uuid4().hex[:8]}"
    events = await nc.subscribe(jetstream.event_subject(job))
    async with serving(SERVICE, store_url=store_url, nats_url=nats_server.url):
        meta = common_pb2.TaskMeta(
            job_id=job, task_id=f"{job}.finish.0", stage="finish", output_prefix=f"jobs/{job}/final"
        )
        task = upscale_pb2.FinishRequest(
            image=common_pb2.ImageRef(uri=info.uri, sha256=info.sha256), meta=meta
        )
        await jetstream.publish_task(nc.jetstream(), "finish", task.SerializeToString(), meta.task_id)
        event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=60)).data)
        assert event.WhichOneof("outcome") == "result"
        out = event.result.finish.image
        assert out.uri.endswith(f"jobs/{job}/final/final.png") and (out.width, out.height) == (128, 128)

        # Even a task may not write into another job's folder: refused, not retried.
        meta = common_pb2.TaskMeta(
            job_id=job, task_id=f"{job}.finish.1", stage="finish", output_prefix="jobs/x/final"
        )
        task.meta.CopyFrom(meta)
        await jetstream.publish_task(nc.jetstream(), "finish", task.SerializeToString(), meta.task_id)
        event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=60)).data)
    assert event.WhichOneof("outcome") == "failure"
    assert event.failure.code == "INVALID_ARGUMENT" and not event.failure.retryable
    assert "another job's folder" in event.failure.message
    assert [i.key for i in open_store(store_url).list("jobs/x/")] == ["jobs/x/best.png"]


async def test_direct_calls_never_replace_a_jobs_outputs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A direct Finish naming a job's folder (or claiming its TaskMeta) is refused; the job's
    final image, perhaps minted already, keeps its bytes and hash. Other prefixes land under direct/."""
    monkeypatch.setenv("GANFOLK_UPSCALE_BACKEND", "lanczos")
    store_url = str(tmp_path / "objects")
    store = open_store(store_url)
    final = store.put("jobs/x/final/final.png", portrait(32), content_type="image/png")
    image = common_pb2.ImageRef(inline_data=portrait(32))
    claims = [
        upscale_pb2.FinishRequest(image=image, output_prefix="jobs/x/final"),
        upscale_pb2.FinishRequest(image=image, output_prefix="/jobs/x/final/"),
        upscale_pb2.FinishRequest(
            image=image,
            meta=common_pb2.TaskMeta(job_id="x", task_id="x.finish.0", output_prefix="jobs/x/final"),
        ),
    ]
    async with serving(SERVICE, store_url=store_url, worker_enabled=False) as (_, channel):
        stub = upscale_pb2_grpc.UpscaleServiceStub(channel)
        for request in claims:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Finish(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "only the tasks of that job write" in (err.value.details() or "")
        mine = await stub.Finish(upscale_pb2.FinishRequest(image=image, output_prefix="x/final"))
    assert mine.image.uri == store.uri("direct/x/final/final.png")
    assert store.get("jobs/x/final/final.png", final.sha256) == portrait(32)
    assert [i.key for i in store.list()] == ["direct/x/final/final.png", "jobs/x/final/final.png"]


async def test_inline_result_is_encoded_once_and_stored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The returned bytes are the stored final.png: one PNG encode, not two."""
    from ganfolk.runtime import images

    encodes: list[int] = []
    real = images.encode_png

    def counting(img: Any) -> bytes:
        encodes.append(1)
        return real(img)

    monkeypatch.setenv("GANFOLK_UPSCALE_BACKEND", "lanczos")
    source = portrait(64)
    monkeypatch.setattr(images, "encode_png", counting)
    async with serving(SERVICE, store_url=str(tmp_path / "objects"), worker_enabled=False) as (_, channel):
        stub = upscale_pb2_grpc.UpscaleServiceStub(channel)
        reply = await stub.Finish(
            upscale_pb2.FinishRequest(
                image=common_pb2.ImageRef(inline_data=source), inline_result=True, output_prefix="one"
            )
        )
    assert len(encodes) == 1
    stored = open_store(str(tmp_path / "objects")).get("direct/one/final.png", reply.image.sha256)
    assert reply.image.WhichOneof("source") == "inline_data" and stored == reply.image.inline_data
