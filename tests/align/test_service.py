"""The align service over real gRPC and a real nats-server."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from nats.aio.client import Client as NATS
from PIL import Image

from ganfolk.runtime import jetstream
from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.storage import open_store
from ganfolk.v1 import align_pb2, align_pb2_grpc, common_pb2, events_pb2
from services.align.main import SERVICE
from tests.align.helpers import astronaut, corrupt_png, encode, eye_centres, no_face, png_header_only
from tests.align.test_core import write_fake_lama
from tests.fixtures.services import serving


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def inline(data: bytes) -> common_pb2.ImageRef:
    return common_pb2.ImageRef(inline_data=data)


async def test_align_inpaint_and_prepare_over_grpc(tmp_path: Path) -> None:
    store_url = str(tmp_path / "objects")
    cropped = np.ascontiguousarray(astronaut()[60:, 150:])
    raw = tmp_path / "raw"
    async with serving(
        SERVICE, store_url=store_url, worker_enabled=False, align_local_source_roots=str(raw)
    ) as (_, channel):
        stub = align_pb2_grpc.AlignServiceStub(channel)

        # The loose crop of a cropped photo: part falls outside, filled by Telea (named fallback).
        reply = await stub.AlignFace(
            align_pb2.AlignFaceRequest(
                image=inline(encode(cropped)),
                params=align_pb2.AlignParams(looseness=1.5, inpaint=True),
                output_prefix="direct/one",
                inline_result=True,
            )
        )
        [face] = reply.faces
        img, mask = pixels(face.image.inline_data), pixels(face.mask.inline_data)
        assert img.shape == (512, 512, 3) and mask.shape == (512, 512) and 0 < (mask > 0).mean() < 0.5
        assert (img[mask > 0].max(axis=1) == 0).mean() < 0.001  # inpainted
        assert len(face.landmarks) == 68 and face.face_box.right > face.face_box.left
        lm = np.array([[p.x, p.y] for p in face.landmarks])
        inner = lm[17:]
        assert (inner[:, 0] > face.face_box.left).all() and (inner[:, 0] < face.face_box.right).all()
        assert abs(face.rotation_degrees) > 1.0
        prov = reply.provenance
        assert list(prov.fallbacks) == ["opencv-telea"]
        assert [m.name for m in prov.models] == ["dlib-hog-frontal-face", "dlib-shape-predictor-68"]
        assert prov.models[1].sha256 and prov.parameters["looseness"] == 1.5
        assert prov.parameters["inpainted_with"] == "telea"
        store = open_store(store_url)
        stored = store.get("direct/one/face-0.png", face.image.sha256)
        assert np.array_equal(pixels(stored), img)

        # 1024 px, the tight FFHQ crop, stored only (by URI).
        ref = store.put("in/astronaut.png", encode(astronaut()))
        big = await stub.AlignFace(
            align_pb2.AlignFaceRequest(
                image=common_pb2.ImageRef(uri=ref.uri, sha256=ref.sha256),
                params=align_pb2.AlignParams(output_size=1024, looseness=1.0),
            )
        )
        assert big.faces[0].image.WhichOneof("source") == "uri"
        assert (big.faces[0].image.width, big.faces[0].image.height) == (1024, 1024)
        assert not pixels(store.get_uri(big.faces[0].mask.uri)).any()
        aligned = pixels(store.get_uri(big.faces[0].image.uri))
        assert aligned.shape == (1024, 1024, 3)

        # Two faces side by side: "all" gives both, largest first; "largest" just one.
        pair = np.ascontiguousarray(
            np.concatenate([astronaut(), astronaut()[::2, ::2].repeat(2, 0)[:, :256]], 1)
        )
        both = await stub.AlignFace(
            align_pb2.AlignFaceRequest(
                image=inline(encode(pair)),
                params=align_pb2.AlignParams(selection=align_pb2.FACE_SELECTION_ALL),
            )
        )
        assert len(both.faces) >= 2
        areas = [
            (f.face_box.right - f.face_box.left) * (f.face_box.bottom - f.face_box.top) for f in both.faces
        ]
        assert areas == sorted(areas, reverse=True)
        one = await stub.AlignFace(align_pb2.AlignFaceRequest(image=inline(encode(pair))))
        assert len(one.faces) == 1 and one.faces[0].face_box == both.faces[0].face_box

        # Inpaint on its own.
        hole = np.zeros(cropped.shape[:2], np.uint8)
        hole[100:140, 100:180] = 255
        painted = await stub.Inpaint(
            align_pb2.InpaintRequest(
                image=inline(encode(cropped)),
                mask=inline(encode(hole)),
                method=align_pb2.INPAINT_METHOD_AUTO,
                inline_result=True,
            )
        )
        out = pixels(painted.image.inline_data)
        assert np.array_equal(out[hole == 0], cropped[hole == 0])
        assert not np.array_equal(out[hole > 0], cropped[hole > 0])
        assert list(painted.provenance.fallbacks) == ["opencv-telea"]
        assert painted.provenance.parameters["used"] == "telea"

        # PrepareDataset streams one message per file, then the manifest.
        raw.mkdir()
        (raw / "a.png").write_bytes(encode(astronaut()))
        (raw / "b.png").write_bytes(encode(no_face()))
        (raw / "c.png").write_bytes(corrupt_png())
        messages = [
            m
            async for m in stub.PrepareDataset(
                align_pb2.PrepareDatasetRequest(source=str(raw), destination="sets/grpc")
            )
        ]
        assert [m.current for m in messages[:-1]] == ["a.png", "b.png", "c.png"]
        last = messages[-1]
        assert last.done and (last.total, last.processed, last.skipped) == (3, 1, 2)
        manifest = json.loads(store.get_uri(last.manifest_uri))
        assert {s["source"] for s in manifest["skipped_files"]} == {"b.png", "c.png"}


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (
            align_pb2.AlignFaceRequest(image=inline(encode(no_face()))),
            grpc.StatusCode.NOT_FOUND,
            "no face found",
        ),
        (
            align_pb2.AlignFaceRequest(image=inline(corrupt_png())),
            grpc.StatusCode.INVALID_ARGUMENT,
            "corrupt image",
        ),
        (
            align_pb2.AlignFaceRequest(image=inline(b"GIF-ish nonsense")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not an image",
        ),
        (
            align_pb2.AlignFaceRequest(image=inline(png_header_only(20_000, 20_000))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "400,000,000 pixels, over the limit",
        ),
        (align_pb2.AlignFaceRequest(), grpc.StatusCode.INVALID_ARGUMENT, "image is required"),
        (
            align_pb2.AlignFaceRequest(
                image=inline(encode(astronaut())), params=align_pb2.AlignParams(output_size=256)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "output_size must be 512 or 1024",
        ),
        (
            align_pb2.AlignFaceRequest(
                image=inline(encode(astronaut())), params=align_pb2.AlignParams(looseness=9)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "looseness must be in",
        ),
        (
            align_pb2.AlignFaceRequest(image=inline(encode(astronaut())), output_prefix="../up"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "output_prefix",
        ),
        (
            align_pb2.AlignFaceRequest(image=inline(encode(astronaut())), output_prefix="jobs/x/align"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "only the tasks of that job write",
        ),
        (
            align_pb2.InpaintRequest(
                image=inline(encode(astronaut())),
                mask=inline(encode(np.zeros((10, 10), np.uint8))),
                output_prefix="jobs/x/inpaint",
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "only the tasks of that job write",
        ),
        (
            align_pb2.InpaintRequest(
                image=inline(encode(astronaut())),
                mask=inline(encode(np.zeros((10, 10), np.uint8))),
                method=align_pb2.INPAINT_METHOD_LAMA,
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "GANFOLK_ALIGN_LAMA_CHECKPOINT",
        ),
        (
            align_pb2.InpaintRequest(
                image=inline(encode(astronaut())), mask=inline(encode(np.zeros((10, 10), np.uint8)))
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "same size",
        ),
    ],
)
async def test_bad_inputs_give_clear_errors(
    grpc_errors: dict[str, tuple[grpc.StatusCode, str]], request_: Any, code: grpc.StatusCode, words: str
) -> None:
    key = request_.SerializeToString().hex()
    got_code, details = grpc_errors[key]
    assert got_code == code, details
    assert words in details


@pytest.fixture(scope="module")
async def grpc_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[grpc.StatusCode, str]]:
    """One service start for every bad request of the parametrized test above."""
    requests = [p[0] for p in _bad_cases()]
    out: dict[str, tuple[grpc.StatusCode, str]] = {}
    store_url = str(tmp_path_factory.mktemp("align-errors"))
    async with serving(SERVICE, store_url=store_url, worker_enabled=False) as (_, channel):
        stub = align_pb2_grpc.AlignServiceStub(channel)
        for req in requests:
            call = stub.AlignFace if isinstance(req, align_pb2.AlignFaceRequest) else stub.Inpaint
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(req)
            out[req.SerializeToString().hex()] = (err.value.code(), err.value.details() or "")
    return out


def _bad_cases() -> list[Any]:
    marker = test_bad_inputs_give_clear_errors.pytestmark[0]  # type: ignore[attr-defined]
    return list(marker.args[1])


async def test_lama_checkpoint_serves_inpaint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_fake_lama(tmp_path)
    monkeypatch.setenv("GANFOLK_ALIGN_LAMA_CHECKPOINT", str(path))
    monkeypatch.setenv("GANFOLK_ALIGN_LAMA_CHECKPOINT_SHA256", file_sha256(path))
    photo = astronaut()[:120, :96]
    hole = np.zeros(photo.shape[:2], np.uint8)
    hole[20:60, 30:70] = 255
    async with serving(SERVICE, store_url=str(tmp_path / "objects"), worker_enabled=False, device="cpu") as (
        _,
        channel,
    ):
        reply = await align_pb2_grpc.AlignServiceStub(channel).Inpaint(
            align_pb2.InpaintRequest(
                image=inline(encode(np.ascontiguousarray(photo))),
                mask=inline(encode(hole)),
                inline_result=True,
            )
        )
    out = pixels(reply.image.inline_data)
    assert (out[20:60, 30:70] == [64, 128, 191]).all()
    assert not reply.provenance.fallbacks
    assert reply.provenance.models[0].name == "lama"
    assert reply.provenance.models[0].sha256 == file_sha256(path)


async def test_align_and_prepare_stages_over_nats(nc: NATS, nats_server: Any, tmp_path: Path) -> None:
    store_url = str(tmp_path / "objects")
    store = open_store(store_url)
    ref = store.put("in/astronaut.png", encode(astronaut()))
    store.put("raw/a.png", encode(astronaut()))
    store.put("raw/b.png", encode(no_face()))
    job = f"job-{uuid.uuid4().hex[:8]}"
    events = await nc.subscribe(jetstream.event_subject(job))
    js = nc.jetstream()
    async with serving(SERVICE, store_url=store_url, nats_url=nats_server.url):
        meta = common_pb2.TaskMeta(
            job_id=job, task_id=f"{job}.align.0", stage="align", output_prefix=f"{job}/align"
        )
        task = align_pb2.AlignFaceRequest(
            image=common_pb2.ImageRef(uri=ref.uri, sha256=ref.sha256),
            params=align_pb2.AlignParams(looseness=1.3),
            meta=meta,
        )
        await jetstream.publish_task(js, "align", task.SerializeToString(), meta.task_id)
        event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=60)).data)
        assert event.WhichOneof("outcome") == "result", event
        [face] = event.result.align_face.faces
        assert face.image.uri == store.uri(f"{job}/align/face-0.png")
        aligned = pixels(store.get_uri(face.image.uri, face.image.sha256))
        assert aligned.shape == (512, 512, 3)
        lm = np.array([[p.x, p.y] for p in face.landmarks])
        left, right = eye_centres(lm)
        assert left[0] < right[0]

        meta = common_pb2.TaskMeta(
            job_id=job, task_id=f"{job}.prep.0", stage="prepare_dataset", output_prefix=f"{job}/set"
        )
        prep = align_pb2.PrepareDatasetRequest(source=store.uri("raw"), meta=meta)
        await jetstream.publish_task(js, "prepare_dataset", prep.SerializeToString(), meta.task_id)
        progress: list[events_pb2.StageProgress] = []
        while True:
            event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=60)).data)
            if event.WhichOneof("outcome") == "progress":
                progress.append(event.progress)
                continue
            break
        assert event.WhichOneof("outcome") == "result", event
        result = event.result.prepare_dataset
        assert result.done and (result.total, result.processed, result.skipped) == (2, 1, 1)
        assert result.manifest_uri == store.uri(f"{job}/set/manifest.json")
        assert progress and progress[-1].percent == 100.0

        # A bad task is terminated with a clear reason, not retried.
        meta = common_pb2.TaskMeta(job_id=job, task_id=f"{job}.align.bad", stage="align")
        bad = align_pb2.AlignFaceRequest(image=common_pb2.ImageRef(inline_data=encode(no_face())), meta=meta)
        await jetstream.publish_task(js, "align", bad.SerializeToString(), meta.task_id)
        event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=60)).data)
        assert event.WhichOneof("outcome") == "failure"
        assert event.failure.code == "NOT_FOUND" and "no face found" in event.failure.message
        assert not event.failure.retryable
