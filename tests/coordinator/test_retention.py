"""Finished jobs leave the jobs bucket after the retention (archived, still found by id), and
the sweep reads only active jobs, through the index."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from ganfolk.runtime import jetstream
from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc
from services.coordinator import retention
from services.coordinator.engine import Engine
from services.coordinator.main import SERVICE as COORDINATOR
from tests.fixtures.nats import NatsServer
from tests.fixtures.services import serving

S = jobs_pb2


@pytest_asyncio.fixture
async def coordinator(
    own_nats: NatsServer, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Engine, jobs_pb2_grpc.JobServiceStub]]:
    settings: dict[str, Any] = getattr(request, "param", {})
    async with serving(
        COORDINATOR, nats_url=own_nats.url, store_url=str(tmp_path / "objects"), **settings
    ) as (running, channel):
        yield running.holder.get().engine, jobs_pb2_grpc.JobServiceStub(channel)


def spec(seed: int) -> jobs_pb2.JobSpec:
    # No stage service runs: the job waits in its first stage until cancelled.
    return jobs_pb2.JobSpec(
        prompt="charcoal sketch of a Turkish boy", num_samples=2, name_and_backstory=False, seed=seed
    )


async def eventually(check: Any, timeout: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.1)
    return result


async def bucket_subjects(engine: Engine, job_id: str) -> int:
    """Messages the jobs bucket's stream still holds for the job's entry (every revision)."""
    subject = f"$KV.{jetstream.JOBS_BUCKET}.{job_id}"
    info = await engine.js.stream_info(f"KV_{jetstream.JOBS_BUCKET}", subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


@pytest.mark.parametrize(
    "coordinator", [{"coordinator_job_retention_s": 1.5, "coordinator_sweep_interval_s": 0.2}], indirect=True
)
async def test_a_finished_job_is_archived_after_the_retention_and_stays_findable(
    coordinator: tuple[Engine, jobs_pb2_grpc.JobServiceStub], tmp_path: Path
) -> None:
    engine, stub = coordinator
    submitted = await stub.Submit(S.SubmitRequest(spec=spec(1), idempotency_key="retention-1"))
    job_id = submitted.job.job_id

    async def indexed() -> bool:
        return job_id in await engine.index.active()

    await eventually(indexed)
    cancelled = (await stub.Cancel(S.CancelRequest(job_id=job_id, reason="done with it"))).job
    cancelled_at = asyncio.get_running_loop().time()
    assert cancelled.state == S.JOB_STATE_CANCELLED

    async def archived() -> bool:
        return (await jetstream.kv_read(engine.jobs, job_id)).value is None

    await eventually(archived)
    # Not before the retention (1.5 s from the terminal write, which the Cancel reply follows).
    assert asyncio.get_running_loop().time() - cancelled_at > 1.0
    # Gone from the bucket, every revision and marker with it, and from the index.
    assert await bucket_subjects(engine, job_id) == 0
    assert job_id not in await engine.index.active() and job_id not in await engine.index.done()
    record = json.loads((tmp_path / "objects" / retention.archive_key(job_id)).read_text())
    assert record["job_id"] == job_id and record["state"] == "JOB_STATE_CANCELLED"

    # Still found by id, as it was when it finished.
    got = (await stub.Get(S.GetRequest(job_id=job_id))).job
    assert got.state == S.JOB_STATE_CANCELLED and got.error == "cancelled: done with it"
    assert got.updated_at == cancelled.updated_at
    again = await stub.Submit(S.SubmitRequest(spec=spec(1), idempotency_key="retention-1"))
    assert again.existing and again.job.job_id == job_id and again.job.state == S.JOB_STATE_CANCELLED
    assert (await stub.Cancel(S.CancelRequest(job_id=job_id))).job.state == S.JOB_STATE_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Review(S.ReviewRequest(job_id=job_id, decision=S.REVIEW_DECISION_APPROVE))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    updates = [u async for u in stub.Watch(S.WatchRequest(job_id=job_id))]
    assert updates[-1].job.state == S.JOB_STATE_CANCELLED
    # List shows what the bucket holds: the archived job is no longer among them.
    assert job_id not in [j.job_id for j in (await stub.List(S.ListRequest())).jobs]
    # Nothing re-created the entry on the way (Cancel, Review and Submit left it archived).
    assert (await jetstream.kv_read(engine.jobs, job_id)).value is None


@pytest.mark.parametrize("coordinator", [{"coordinator_sweep_interval_s": 3600.0}], indirect=True)
async def test_the_sweep_reads_only_active_jobs(
    coordinator: tuple[Engine, jobs_pb2_grpc.JobServiceStub], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, stub = coordinator
    finished, active = [], []
    for seed in range(12):
        job_id = (await stub.Submit(S.SubmitRequest(spec=spec(seed)))).job.job_id
        if seed < 9:
            await stub.Cancel(S.CancelRequest(job_id=job_id))
            finished.append(job_id)
        else:
            active.append(job_id)
    listed = {j.job_id for j in (await stub.List(S.ListRequest(page_size=100))).jobs}
    assert listed == set(finished + active)  # finished jobs stay listed within the retention

    async def index_settled() -> bool:
        return set(await engine.index.active()) == set(active) and set(await engine.index.done()) == set(
            finished
        )

    await eventually(index_settled)
    reads: list[str] = []
    real_read = jetstream.kv_read

    async def counting_read(kv: Any, key: str) -> jetstream.Versioned:
        if kv is engine.jobs:
            reads.append(key)
        return await real_read(kv, key)

    monkeypatch.setattr(jetstream, "kv_read", counting_read)
    await engine._sweep_once()
    assert sorted(reads) == sorted(active)


@pytest.mark.parametrize("coordinator", [{"coordinator_sweep_interval_s": 3600.0}], indirect=True)
async def test_the_sweep_repairs_an_index_a_crash_left_behind(
    coordinator: tuple[Engine, jobs_pb2_grpc.JobServiceStub],
) -> None:
    engine, stub = coordinator
    job_id = (await stub.Submit(S.SubmitRequest(spec=spec(5)))).job.job_id
    await stub.Cancel(S.CancelRequest(job_id=job_id))
    # As if the coordinator died between the terminal write and the index update, and
    # another died between indexing a submission and creating its job (long ago).
    await engine.index.activate(job_id, 0)
    await engine.index.activate("job-" + "0" * 24, 0)

    async def indexed_as_active() -> bool:
        return {job_id, "job-" + "0" * 24} <= set(await engine.index.active())

    await eventually(indexed_as_active)
    assert await engine._active_jobs(1e10) == []

    async def repaired() -> bool:
        return not await engine.index.active() and job_id in await engine.index.done()

    await eventually(repaired)


async def test_jobs_written_before_the_index_are_indexed_at_start(
    own_nats: NatsServer, tmp_path: Path
) -> None:
    nc = await jetstream.connect(own_nats.url, "pytest")
    jobs = await jetstream.ensure_kv(nc.jetstream(), jetstream.JOBS_BUCKET)
    old = {
        "job-" + f"{i:024x}": state for i, state in enumerate((S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED))
    }
    for job_id, state in old.items():
        await jobs.put(job_id, S.Job(job_id=job_id, state=state).SerializeToString())
    await nc.drain()
    running_id, succeeded_id = old
    async with serving(COORDINATOR, nats_url=own_nats.url, store_url=str(tmp_path / "objects")) as (
        running,
        _,
    ):
        engine: Engine = running.holder.get().engine
        assert set(await engine.index.active()) == {running_id}
        assert set(await engine.index.done()) == {succeeded_id}
