"""Stage timeouts count from the last word of a stage's workers, not from its start."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from ganfolk.runtime import jetstream
from ganfolk.runtime.catalog import Stage
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.storage import open_store
from ganfolk.runtime.worker import StageHandler, StageWorker, TaskContext, publish_event
from ganfolk.v1 import clip_pb2, common_pb2, events_pb2, jobs_pb2, jobs_pb2_grpc
from services.coordinator.config import CoordinatorSettings
from services.coordinator.engine import Engine
from services.coordinator.main import SERVICE as COORDINATOR
from services.stylegan.main import SERVICE as STYLEGAN
from tests.coordinator.test_service import GOLDEN, spec, wait_for
from tests.fixtures.nats import NatsServer
from tests.fixtures.services import serving

S = jobs_pb2


async def stored_at(url: str, job_id: str, stage: Stage) -> list[float]:
    """When the stream stored each of the job's events of ``stage`` (the coordinator's view)."""
    nc = await jetstream.connect(url, "reader")
    js = nc.jetstream()
    subject = jetstream.event_subject(job_id)
    try:
        info = await js.stream_info(jetstream.EVENTS_STREAM, subjects_filter=subject)
        count = (info.state.subjects or {}).get(subject, 0)
        sub = await js.subscribe(subject, ordered_consumer=True)
        times = []
        for _ in range(count):
            msg = await sub.next_msg(timeout=10)
            if events_pb2.StageEvent.FromString(msg.data).meta.stage == stage.value:
                times.append(msg.metadata.timestamp.timestamp())
        return times
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def rank_worker(url: str, handle: Any) -> AsyncIterator[None]:
    """A worker on the real ``rank`` stage whose handler the test writes."""
    nc = await jetstream.connect(url, "rank-stand-in")
    policy = StagePolicy(ack_wait=5.0, max_deliver=1, fetch_timeout=0.3)
    worker = StageWorker(nc, StageHandler(Stage.RANK, clip_pb2.RankRequest, handle, "rank", policy))
    await worker.setup()
    runner = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        await worker.stop(grace=0.5)
        await asyncio.wait_for(runner, 30)
        await nc.close()


async def test_reporting_stage_outlives_its_timeout_and_fails_once_silent(
    monkeypatch: pytest.MonkeyPatch, own_nats: NatsServer, tmp_path: Path
) -> None:
    """Progress for 3x the rank timeout keeps the job running; then silence fails it one timeout later."""
    timeout = 4.0
    reports = 56  # every 0.25 s: 14 s of reporting, a wide margin on a loaded CPU
    sent: list[float] = []

    async def slow_rank(request: clip_pb2.RankRequest, ctx: TaskContext) -> clip_pb2.RankResponse:
        for step in range(reports):
            await ctx.progress(100.0 * step / reports, f"chunk {step}")
            sent.append(time.time())
            await asyncio.sleep(0.25)
        await asyncio.sleep(60)  # hangs without a word (the loop's heartbeats are no events)
        raise AssertionError("the job should have failed meanwhile")

    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(GOLDEN))
    common = {"nats_url": own_nats.url, "store_url": str(tmp_path / "objects")}
    async with (
        rank_worker(own_nats.url, slow_rank),
        serving(STYLEGAN, **common),
        serving(
            COORDINATOR, **common, coordinator_timeout_rank_s=timeout, coordinator_sweep_interval_s=0.2
        ) as (_, channel),
    ):
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec(num_samples=2)))).job.job_id
        job = await wait_for(
            stub, job_id, lambda j: j.state != S.JOB_STATE_RUNNING or len(sent) >= reports, 120
        )
        assert job.state == S.JOB_STATE_RUNNING, job.error  # reported far past the timeout: kept
        job = await wait_for(stub, job_id, lambda j: j.state == S.JOB_STATE_FAILED, 60)
        last_report = max(await stored_at(own_nats.url, job_id, Stage.RANK))
    rank = next(s for s in job.stages if s.stage == S.STAGE_RANK)
    assert "STAGE_RANK" in job.error and "no word from its tasks for 4s" in job.error
    assert "is the clip service running?" in job.error
    finished = rank.finished_at.ToNanoseconds() / 1e9
    ran, silent = finished - rank.started_at.ToNanoseconds() / 1e9, finished - last_report
    print(f"rank ran {ran:.1f}s against a {timeout}s timeout; failed {silent:.1f}s after its last report")
    assert ran > 3 * timeout
    assert timeout <= silent < timeout + 5.0


async def test_a_replica_that_missed_the_events_reads_them_back(own_nats: NatsServer, tmp_path: Path) -> None:
    """Events reach one replica each: another one finds them in the stream before failing the stage."""
    nc: NATS = await jetstream.connect(own_nats.url, "test")
    js = nc.jetstream()
    await jetstream.ensure_streams(js)
    settings = CoordinatorSettings(coordinator_timeout_rank_s=2.0, coordinator_timeout_sample_s=2.0)
    engine = Engine(nc, settings, open_store(tmp_path / "objects"))
    job_id = "job-readback"
    progress = events_pb2.StageEvent(progress=events_pb2.StageProgress(percent=10.0))
    for stage, task_id in ((Stage.RANK, f"{job_id}.rank.0"), (Stage.SAMPLE, f"{job_id}.sample.0")):
        meta = common_pb2.TaskMeta(job_id=job_id, task_id=task_id, stage=stage.value)
        await publish_event(js, meta, 1, events_pb2.StageEvent().FromString(progress.SerializeToString()))
    try:
        assert await engine._heard_lately(job_id, S.STAGE_RANK, time.time())
        assert not await engine._heard_lately(job_id, S.STAGE_FINISH, time.time())  # other stages' only
        assert not await engine._heard_lately("job-unheard", S.STAGE_RANK, time.time())
        assert not await engine._heard_lately(job_id, S.STAGE_RANK, time.time() + 3.0)  # too long ago
        # What it read extends the deadline as if it had handled the event itself.
        assert (job_id, S.STAGE_RANK) in engine._activity
        consumers = [c.name async for c in _consumers(js)]
        assert not [c for c in consumers if c.startswith("activity-")]  # the read-back cleaned up
    finally:
        await engine.names.close()
        await nc.close()


async def _consumers(js: Any) -> AsyncIterator[Any]:
    for info in await js.consumers_info(jetstream.EVENTS_STREAM):
        yield info
