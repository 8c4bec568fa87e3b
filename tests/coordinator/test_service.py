"""The coordinator on real NATS with the real stylegan service: jobs API, fan-out, cancel, auth."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc
from services.coordinator.main import SERVICE as COORDINATOR
from services.stylegan.main import SERVICE as STYLEGAN
from tests.fixtures import golden
from tests.fixtures.services import serving

S = jobs_pb2
GOLDEN = golden.path("stylegan2_tiny.pt")


@contextlib.asynccontextmanager
async def stack(
    monkeypatch: pytest.MonkeyPatch, nats_url: str, store: Path, **coordinator: Any
) -> AsyncIterator[jobs_pb2_grpc.JobServiceStub]:
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(GOLDEN))
    common = {"nats_url": nats_url, "store_url": str(store)}
    async with (
        serving(STYLEGAN, **common),
        serving(COORDINATOR, **common, **coordinator) as (_, channel),
    ):
        yield jobs_pb2_grpc.JobServiceStub(channel)


async def wait_for(
    stub: jobs_pb2_grpc.JobServiceStub, job_id: str, predicate: Any, timeout: float = 60
) -> jobs_pb2.Job:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await stub.Get(jobs_pb2.GetRequest(job_id=job_id))).job
        if predicate(job):
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job never reached the expected state: {job}")
        await asyncio.sleep(0.1)


def spec(**kw: Any) -> jobs_pb2.JobSpec:
    base: dict[str, Any] = {
        "prompt": "charcoal sketch of an inquisitive Turkish boy",
        "num_samples": 6,
        "sample_task_size": 4,
        "name_and_backstory": False,
        "seed": 11,
    }
    return jobs_pb2.JobSpec(**{**base, **kw})


async def test_sample_fanout_then_waits_for_rank_and_cancel(
    monkeypatch: pytest.MonkeyPatch, nats_server: Any, tmp_path: Path
) -> None:
    async with stack(monkeypatch, nats_server.url, tmp_path / "objects") as stub:
        submitted = await stub.Submit(jobs_pb2.SubmitRequest(spec=spec(), idempotency_key="k-fanout"))
        job_id = submitted.job.job_id
        assert not submitted.existing
        again = await stub.Submit(jobs_pb2.SubmitRequest(spec=spec(), idempotency_key="k-fanout"))
        assert again.existing and again.job.job_id == job_id

        def rank_started(job: jobs_pb2.Job) -> bool:
            return any(s.stage == S.STAGE_RANK and s.state == S.JOB_STATE_RUNNING for s in job.stages)

        job = await wait_for(stub, job_id, rank_started)
        sample = next(s for s in job.stages if s.stage == S.STAGE_SAMPLE)
        assert sample.state == S.JOB_STATE_SUCCEEDED and sample.tasks_total == 2
        assert sorted(sample.tasks_done) == [f"{job_id}.sample.0", f"{job_id}.sample.1"]
        assert sample.images_total == 6 and len(sample.images) == 4  # shard 0's; the rest in the manifest
        manifests = sorted((tmp_path / "objects" / sample.manifest_prefix).glob("*.json"))
        assert [m.name for m in manifests] == [f"{job_id}.sample.0.json", f"{job_id}.sample.1.json"]
        listed_seeds = [i["seed"] for m in manifests for i in json.loads(m.read_text())["images"]]
        assert listed_seeds == list(range(11, 17))
        listed = await stub.List(jobs_pb2.ListRequest(page_size=100))
        assert job_id in [j.job_id for j in listed.jobs]

        cancelled = await stub.Cancel(jobs_pb2.CancelRequest(job_id=job_id, reason="test"))
        assert cancelled.job.state == S.JOB_STATE_CANCELLED
        updates = [u async for u in stub.Watch(jobs_pb2.WatchRequest(job_id=job_id))]
        assert updates[0].event.message == "submitted"
        assert updates[-1].job.state == S.JOB_STATE_CANCELLED
        assert any("sample task 2/2" in u.event.message for u in updates)


async def test_stage_without_service_times_out_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, nats_server: Any, tmp_path: Path
) -> None:
    async with stack(
        monkeypatch,
        nats_server.url,
        tmp_path / "objects",
        coordinator_timeout_rank_s=1.0,
        coordinator_sweep_interval_s=0.3,
    ) as stub:
        job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec(num_samples=2)))).job.job_id
        job = await wait_for(stub, job_id, lambda j: j.state == S.JOB_STATE_FAILED)
        assert "STAGE_RANK" in job.error and "is the clip service running?" in job.error


async def test_bad_requests(monkeypatch: pytest.MonkeyPatch, nats_server: Any, tmp_path: Path) -> None:
    async with stack(monkeypatch, nats_server.url, tmp_path / "objects") as stub:
        for call, message in (
            (stub.Submit(jobs_pb2.SubmitRequest(spec=spec(top_k=50))), "top_k 50 is larger"),
            (stub.Get(jobs_pb2.GetRequest(job_id="")), "job_id is required"),
            (stub.List(jobs_pb2.ListRequest(page_size=5000)), "page_size"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Get(jobs_pb2.GetRequest(job_id="job-" + "0" * 24))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec(num_samples=1)))).job.job_id
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Review(jobs_pb2.ReviewRequest(job_id=job_id, decision=S.REVIEW_DECISION_APPROVE))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_bearer_token_auth(monkeypatch: pytest.MonkeyPatch, nats_server: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("GANFOLK_COORDINATOR_AUTH_TOKEN", "s3cret")
    async with stack(monkeypatch, nats_server.url, tmp_path / "objects") as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.List(jobs_pb2.ListRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = await stub.List(jobs_pb2.ListRequest(), metadata=(("authorization", "Bearer s3cret"),))
        assert reply is not None


async def test_hand_offs_read_no_job_entry_and_write_manifests_first(
    monkeypatch: pytest.MonkeyPatch, nats_server: Any, tmp_path: Path
) -> None:
    """Result events start from the entry the coordinator last wrote (no KV read), and a shard
    is counted in the job only after its manifest object is in the store, even when the
    manifest write is slow and overlaps the update."""
    import contextvars

    from ganfolk.runtime import jetstream
    from ganfolk.runtime.storage import LocalStore
    from services.coordinator.engine import Engine

    objects = tmp_path / "objects"
    handling = contextvars.ContextVar("handling", default=False)
    reads: list[str] = []
    counted_without_manifest: list[str] = []
    real_read, real_cas, real_handle, real_put = (
        jetstream.kv_read,
        jetstream.kv_cas,
        Engine._handle,
        LocalStore.put,
    )

    async def handle(engine: Engine, msg: Any) -> None:
        handling.set(True)
        await real_handle(engine, msg)

    async def read(kv: Any, key: str) -> jetstream.Versioned:
        if handling.get() and kv._name == jetstream.JOBS_BUCKET:
            reads.append(key)
        return await real_read(kv, key)

    async def cas(kv: Any, key: str, value: bytes, revision: int) -> int:
        if kv._name == jetstream.JOBS_BUCKET:
            for status in jobs_pb2.Job.FromString(value).stages:
                for task_id in status.tasks_done if status.manifest_prefix else ():
                    if not (objects / status.manifest_prefix / f"{task_id}.json").is_file():
                        counted_without_manifest.append(task_id)
        return await real_cas(kv, key, value, revision)

    def slow_put(store: LocalStore, key: str, *args: Any, **kwargs: Any) -> Any:
        if "/manifest/" in key:
            import time

            time.sleep(0.3)
        return real_put(store, key, *args, **kwargs)

    monkeypatch.setattr(Engine, "_handle", handle)
    monkeypatch.setattr(jetstream, "kv_read", read)
    monkeypatch.setattr(jetstream, "kv_cas", cas)
    monkeypatch.setattr(LocalStore, "put", slow_put)
    async with stack(monkeypatch, nats_server.url, objects) as stub:
        submitted = await stub.Submit(jobs_pb2.SubmitRequest(spec=spec(seed=21)))
        job_id = submitted.job.job_id

        def rank_started(job: jobs_pb2.Job) -> bool:
            return any(s.stage == S.STAGE_RANK and s.state == S.JOB_STATE_RUNNING for s in job.stages)

        job = await wait_for(stub, job_id, rank_started)
    sample = next(s for s in job.stages if s.stage == S.STAGE_SAMPLE)
    assert sorted(sample.tasks_done) == [f"{job_id}.sample.0", f"{job_id}.sample.1"]
    assert counted_without_manifest == []
    assert reads == []
