"""A job with more samples than its old KV entry could hold, on a nats-server with a small
max_payload, then its outputs through GetOutputs on the local store and on an S3 API server.

Real stylegan (golden tiny generator) and upscale (golden tiny RRDBNet) services; clip and
vqgan are announced with random weights, so the coordinator skips rank and refine (the
lowest seed's sample becomes the best one) and the job finishes without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ganfolk import cli
from ganfolk.client import JobsClient, download_outputs
from ganfolk.runtime import jetstream
from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.images import decode_array
from ganfolk.v1 import common_pb2, info_pb2, jobs_pb2, jobs_pb2_grpc, upscale_pb2
from services.coordinator.main import SERVICE as COORDINATOR
from services.stylegan.main import SERVICE as STYLEGAN
from services.upscale.main import SERVICE as UPSCALE
from tests.fixtures import golden
from tests.fixtures.nats import NatsServer, wait_port
from tests.fixtures.s3 import S3Server, unique_bucket_name
from tests.fixtures.services import serving

S = jobs_pb2
MAX_PAYLOAD = 64 * 1024
SAMPLES = 600
TOKEN = "outputs-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


class SmallPayloadNats(NatsServer):
    """nats-server whose messages (and so KV entries) are limited to ``MAX_PAYLOAD`` bytes."""

    def start(self) -> None:
        conf = self.store_dir / "nats.conf"
        conf.write_text(f"max_payload: {MAX_PAYLOAD}\n")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.store_dir),
                "-c",
                str(conf),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)


@pytest.fixture(scope="module")
def small_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = SmallPayloadNats(tmp_path_factory.mktemp("nats-small"))
    server.start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def stack(
    monkeypatch: pytest.MonkeyPatch, nats_url: str, store_url: str
) -> AsyncIterator[tuple[jobs_pb2_grpc.JobServiceStub, str]]:
    """The services and the coordinator; yields a stub and the coordinator's address."""
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(golden.path("stylegan2_tiny.pt")))
    monkeypatch.setenv("GANFOLK_UPSCALE_CHECKPOINT", str(golden.path("rrdbnet_tiny.pth")))
    monkeypatch.setenv("GANFOLK_DEVICE", "cpu")
    monkeypatch.setenv("GANFOLK_COORDINATOR_AUTH_TOKEN", TOKEN)
    nc = await jetstream.connect(nats_url, name="pytest-outputs")
    try:
        for service in ("clip", "vqgan"):
            info = info_pb2.GetInfoResponse(service=service, random_weights=True)
            await jetstream.publish_service_info(nc.jetstream(), service, info.SerializeToString())
    finally:
        await nc.drain()
    common = {"nats_url": nats_url, "store_url": store_url}
    async with (
        serving(STYLEGAN, **common),
        serving(UPSCALE, **common),
        serving(COORDINATOR, coordinator_sweep_interval_s=0.5, **common) as (running, channel),
    ):
        yield jobs_pb2_grpc.JobServiceStub(channel), f"127.0.0.1:{running.port}"


def old_layout_bytes(samples: list[dict[str, Any]]) -> int:
    """What the job entry used to carry for its samples: each one's ImageRef, inline."""
    keys = ("uri", "sha256", "width", "height", "media_type")
    return sum(common_pb2.ImageRef(**{k: s[k] for k in keys if k in s}).ByteSize() + 3 for s in samples)


async def run_big_job(stub: jobs_pb2_grpc.JobServiceStub) -> jobs_pb2.Job:
    spec = jobs_pb2.JobSpec(
        prompt="charcoal sketch of an inquisitive Turkish boy",
        num_samples=SAMPLES,
        sample_task_size=100,
        seed=3,
        name_and_backstory=False,
        finish=upscale_pb2.FinishParams(noise_seed=1),
    )
    job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec), metadata=AUTH)).job.job_id
    last = None

    async def watch() -> None:
        nonlocal last
        async for update in stub.Watch(jobs_pb2.WatchRequest(job_id=job_id), metadata=AUTH):
            assert update.ByteSize() < MAX_PAYLOAD
            last = update.job

    await asyncio.wait_for(watch(), 240)
    assert last is not None and last.state == S.JOB_STATE_SUCCEEDED, last
    return (await stub.Get(jobs_pb2.GetRequest(job_id=job_id), metadata=AUTH)).job


async def check_outputs(
    stub: jobs_pb2_grpc.JobServiceStub, job: jobs_pb2.Job, target: str, out: Path
) -> set[str]:
    """Download through the client as the CLI does; returns how the outputs came (url/chunk)."""
    with pytest.raises(grpc.aio.AioRpcError) as err:  # authorised like every job call
        async for _ in stub.GetOutputs(jobs_pb2.GetOutputsRequest(job_id=job.job_id)):
            pass
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.GetOutputs(jobs_pb2.GetOutputsRequest(job_id="job-" + "0" * 24), metadata=AUTH):
            pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    kinds = {
        part.WhichOneof("content")
        async for part in stub.GetOutputs(jobs_pb2.GetOutputsRequest(job_id=job.job_id), metadata=AUTH)
    }
    async with JobsClient(target, token=TOKEN) as client:
        written = await download_outputs(client, job, out)
    assert set(written) == {"final", "best_sample", "manifest", "metadata"}
    final = Path(written["final"]).read_bytes()
    assert hashlib.sha256(final).hexdigest() == job.final_image.sha256
    assert decode_array(final, 10**7).shape == (128, 128, 3)  # 32 px sample -> 4x
    manifest = json.loads(Path(written["manifest"]).read_text())
    assert [s["seed"] for s in manifest["samples"]] == list(range(3, 3 + SAMPLES))
    assert manifest["best_sample"]["uri"] == job.best_sample.uri == manifest["samples"][0]["uri"]
    assert json.loads(Path(written["metadata"]).read_text())["job_id"] == job.job_id
    # The claim check: the old layout would not have fit in one message of this server.
    assert old_layout_bytes(manifest["samples"]) > MAX_PAYLOAD
    sample = next(s for s in job.stages if s.stage == S.STAGE_SAMPLE)
    assert sample.images_total == SAMPLES and len(sample.images) <= 16
    assert job.ByteSize() < MAX_PAYLOAD // 4
    return kinds


async def test_big_job_and_outputs_on_the_local_store(
    monkeypatch: pytest.MonkeyPatch, small_nats: NatsServer, tmp_path: Path
) -> None:
    async with stack(monkeypatch, small_nats.url, str(tmp_path / "objects")) as (stub, target):
        job = await run_big_job(stub)
        kinds = await check_outputs(stub, job, target, tmp_path / "out")
        # The CLI needs only the coordinator: a store it could not open changes nothing.
        monkeypatch.setenv("GANFOLK_STORE_URL", "s3://nowhere?endpoint=127.0.0.1:9&secure=false")
        argv = [
            "jobs",
            "get",
            job.job_id,
            "--out",
            str(tmp_path / "cli"),
            "--target",
            target,
            "--token",
            TOKEN,
        ]
        assert await asyncio.to_thread(cli.main, argv) == 0
    assert kinds == {"chunk"}  # file:// URIs mean nothing to a remote client: bytes are streamed
    saved = tmp_path / "cli" / job.job_id
    assert sorted(p.name for p in saved.iterdir()) == [
        "best_sample.png",
        "final.png",
        "job.json",
        "manifest.json",
    ]
    assert file_sha256(saved / "final.png") == job.final_image.sha256


async def test_outputs_on_s3_are_presigned_urls(
    monkeypatch: pytest.MonkeyPatch, small_nats: NatsServer, s3_server: S3Server, tmp_path: Path
) -> None:
    monkeypatch.setenv("GANFOLK_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("GANFOLK_S3_SECRET_KEY", s3_server.secret_key)
    store_url = f"s3://{unique_bucket_name('outputs')}?endpoint={s3_server.endpoint}&secure=false"
    async with stack(monkeypatch, small_nats.url, store_url) as (stub, target):
        job = await run_big_job(stub)
        kinds = await check_outputs(stub, job, target, tmp_path / "out")
        assert kinds == {"url"}
        # A client that cannot reach the store asks for the bytes instead.
        streamed = [
            part
            async for part in stub.GetOutputs(
                jobs_pb2.GetOutputsRequest(job_id=job.job_id, stream=True), metadata=AUTH
            )
        ]
    assert {p.WhichOneof("content") for p in streamed} == {"chunk"}
    final = b"".join(p.chunk for p in streamed if p.name == "final")
    assert hashlib.sha256(final).hexdigest() == job.final_image.sha256
