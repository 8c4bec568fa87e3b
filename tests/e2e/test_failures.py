"""Crashes and restarts in the middle of portrait jobs: nothing lost, nothing done twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from ganfolk.runtime import jetstream
from ganfolk.runtime.storage import open_store
from ganfolk.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc, vqgan_pb2
from tests.e2e.stack import Models, in_process, job_spec, processes, service_process, tiny_models
from tests.fixtures.nats import NatsServer
from tests.fixtures.services import wait_serving
from tests.mint.fixtures import anvil  # noqa: F401  (session fixture)

S = jobs_pb2
ALL_BUT_SAMPLER = ("clip", "vqgan", "upscale", "text", "mint")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return tiny_models(tmp_path_factory.mktemp("e2e-models"))


@pytest.fixture
def broker(own_nats: NatsServer) -> NatsServer:
    """A nats-server of this test's own (restartable, fresh consumers)."""
    return own_nats


async def get(stub: jobs_pb2_grpc.JobServiceStub, job_id: str) -> jobs_pb2.Job:
    return (await stub.Get(jobs_pb2.GetRequest(job_id=job_id))).job


async def wait_until(stub: Any, job_id: str, predicate: Any, timeout: float = 240) -> jobs_pb2.Job:
    deadline = asyncio.get_running_loop().time() + timeout
    job = None
    while True:
        with contextlib.suppress(grpc.aio.AioRpcError):
            job = await get(stub, job_id)
            if predicate(job):
                return job
        if asyncio.get_running_loop().time() > deadline:
            stages = (
                [(S.Stage.Name(s.stage), S.JobState.Name(s.state), list(s.tasks_done)) for s in job.stages]
                if job
                else []
            )
            raise AssertionError(
                f"job {job_id} did not reach the expected state: {stages} {job.error if job else ''}"
            )
        await asyncio.sleep(0.2)


def stage_started(stage: int) -> Any:
    return lambda job: finished(job) or any(s.stage == stage for s in job.stages)


def finished(job: jobs_pb2.Job) -> bool:
    return job.state in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)


async def ack_pending(nc: NATS, stage: str) -> int:
    """Tasks of ``stage`` delivered and not yet acked; a missing consumer or a broker error raises
    (a 0 from a failed read would pass every check that waits for 0)."""
    info = await nc.jetstream().consumer_info(jetstream.TASKS_STREAM, jetstream.consumer_name(stage))
    return int(info.num_ack_pending or 0)


async def job_events(nc: NATS, job_id: str) -> list[events_pb2.StageEvent]:
    """Every event of ``job_id`` that GANFOLK_EVENTS kept, in order (read by an ordered consumer)."""
    sub = await nc.jetstream().subscribe(
        jetstream.event_subject(job_id), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    events = []
    try:
        while True:
            msg = await sub.next_msg(timeout=30)
            events.append(events_pb2.StageEvent.FromString(msg.data))
            if msg.metadata.num_pending == 0:
                return events
    finally:
        await sub.unsubscribe()


def sample_objects(store_dir: Path, job_id: str) -> list[str]:
    return [o.key for o in open_store(store_dir).list(f"jobs/{job_id}/samples/")]


async def test_kill_9_sampler_mid_task(
    monkeypatch: pytest.MonkeyPatch,
    models: Models,
    broker: NatsServer,
    anvil: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "objects"
    log = tmp_path / "stylegan.log"
    ack = {"GANFOLK_TASK_ACK_WAIT_S": "2"}
    nc = await jetstream.connect(broker.url, "test")
    victim = service_process("stylegan", models, broker.url, store_dir, anvil.url, log, **ack)
    with processes(victim):
        async with in_process(monkeypatch, models, broker.url, store_dir, anvil.url, ALL_BUT_SAMPLER) as stub:
            assert stub is not None
            spec = job_spec(num_samples=600, sample_task_size=300, mint=False)
            job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec))).job.job_id
            deadline = asyncio.get_running_loop().time() + 180
            while True:
                with contextlib.suppress(NotFoundError):  # the victim has not made its consumer yet
                    if await ack_pending(nc, "sample"):
                        break
                assert victim.poll() is None, log.read_text()[-2000:]
                assert asyncio.get_running_loop().time() < deadline, "no sample task was ever in flight"
                await asyncio.sleep(0.05)
            victim.send_signal(signal.SIGKILL)  # mid-task, unacked
            assert victim.wait(10) == -signal.SIGKILL
            survivor = service_process("stylegan", models, broker.url, store_dir, anvil.url, log, **ack)
            with processes(survivor):
                job = await wait_until(stub, job_id, finished)
    events = await job_events(nc, job_id)
    await nc.drain()
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    sample = next(s for s in job.stages if s.stage == S.STAGE_SAMPLE)
    assert sorted(sample.tasks_done) == [f"{job_id}.sample.0", f"{job_id}.sample.1"]
    results = [e for e in events if e.WhichOneof("outcome") == "result" and e.meta.stage == "sample"]
    # Only the victim served the stage before the kill, so a result of a later delivery is the
    # survivor's redelivery of the task the victim held unacked when it died.
    assert any(e.attempt >= 2 for e in results), [(e.meta.task_id, e.attempt) for e in results]
    assert sorted(e.meta.task_id for e in results) == sorted(sample.tasks_done)  # one result per task
    assert sample.images_total == 600  # every sample once, though a shard ran twice
    listed = [
        i["uri"]
        for m in sorted((store_dir / sample.manifest_prefix).glob("*.json"))
        for i in json.loads(m.read_text())["images"]
    ]
    assert len(listed) == len(set(listed)) == 600  # the manifest neither lost nor doubled one
    assert len(sample_objects(store_dir, job_id)) == 600  # retried work overwrote, added nothing


async def test_coordinator_killed_mid_job_another_finishes_it(
    monkeypatch: pytest.MonkeyPatch,
    models: Models,
    broker: NatsServer,
    anvil: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "objects"
    log = tmp_path / "coordinator.log"
    async with in_process(monkeypatch, models, broker.url, store_dir, anvil.url, coordinator=False):
        first = service_process(
            "coordinator", models, broker.url, store_dir, anvil.url, log, GANFOLK_GRPC_PORT="0"
        )
        with processes(first):
            port = await _port_from_log(log, first)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await wait_serving(channel)
                stub = jobs_pb2_grpc.JobServiceStub(channel)
                spec = job_spec(refine=vqgan_pb2.RefineParams(size=32, iterations=150, cutn=4, seed=1))
                job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec))).job.job_id
                job = await wait_until(stub, job_id, stage_started(S.STAGE_REFINE))
                assert not finished(job)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        log.write_text("")
        second = service_process("coordinator", models, broker.url, store_dir, anvil.url, log)
        with processes(second):
            port = await _port_from_log(log, second)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await wait_serving(channel)
                job = await wait_until(jobs_pb2_grpc.JobServiceStub(channel), job_id, finished)
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    assert job.token.token_id


async def _port_from_log(log: Path, proc: Any, timeout: float = 90) -> int:
    import json

    for _ in range(int(timeout / 0.1)):
        if proc.poll() is not None:
            raise AssertionError(f"process exited: {log.read_text()[-2000:]}")
        if log.exists():
            for line in log.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("msg") == "grpc listening":
                        return int(entry["address"].rsplit(":", 1)[1])
        await asyncio.sleep(0.1)
    raise AssertionError("no 'grpc listening' line")


async def test_broker_restart_mid_job(
    monkeypatch: pytest.MonkeyPatch,
    models: Models,
    broker: NatsServer,
    anvil: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "objects"
    async with in_process(monkeypatch, models, broker.url, store_dir, anvil.url) as stub:
        assert stub is not None
        spec = job_spec(refine=vqgan_pb2.RefineParams(size=32, iterations=150, cutn=4, seed=1), mint=False)
        job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec))).job.job_id
        job = await wait_until(stub, job_id, stage_started(S.STAGE_REFINE))
        assert not finished(job)
        await asyncio.to_thread(broker.restart)  # file store: streams, consumers and KV survive
        job = await wait_until(stub, job_id, finished)
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error


async def test_two_coordinators_drive_each_job_once(
    monkeypatch: pytest.MonkeyPatch,
    models: Models,
    broker: NatsServer,
    anvil: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from ganfolk.runtime.service import load_definition
    from tests.fixtures.services import serving

    store_dir = tmp_path / "objects"
    async with (
        in_process(monkeypatch, models, broker.url, store_dir, anvil.url) as stub_a,
        serving(
            load_definition("coordinator"),
            nats_url=broker.url,
            store_url=str(store_dir),
            coordinator_sweep_interval_s=0.5,
        ) as (_, channel_b),
    ):
        assert stub_a is not None
        stub_b = jobs_pb2_grpc.JobServiceStub(channel_b)
        ids = []
        for i, stub in enumerate((stub_a, stub_b, stub_a)):
            ids.append((await stub.Submit(jobs_pb2.SubmitRequest(spec=job_spec(seed=i)))).job.job_id)
        jobs = [
            await wait_until(stub_b if i % 2 else stub_a, job_id, finished) for i, job_id in enumerate(ids)
        ]
    assert all(j.state == S.JOB_STATE_SUCCEEDED for j in jobs), [j.error for j in jobs]
    for job in jobs:
        for status in job.stages:
            assert len(status.tasks_done) == len(set(status.tasks_done)) == status.tasks_total
    assert len({j.token.token_id for j in jobs}) == 3  # one token per job, none twice


async def test_cancel_mid_job_runs_nothing_further(
    monkeypatch: pytest.MonkeyPatch,
    models: Models,
    broker: NatsServer,
    anvil: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "objects"
    async with in_process(monkeypatch, models, broker.url, store_dir, anvil.url) as stub:
        assert stub is not None
        spec = job_spec(refine=vqgan_pb2.RefineParams(size=32, iterations=5000, cutn=4, seed=1))
        job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec))).job.job_id
        await wait_until(stub, job_id, stage_started(S.STAGE_REFINE))
        await asyncio.sleep(1.0)
        job = (await stub.Cancel(jobs_pb2.CancelRequest(job_id=job_id, reason="changed my mind"))).job
        assert job.state == S.JOB_STATE_CANCELLED
        nc = await jetstream.connect(broker.url, "test")
        # The refine loop stops within an iteration and its task is acked (not left running).
        for _ in range(100):
            if await ack_pending(nc, "refine") == 0:
                break
            await asyncio.sleep(0.1)
        assert await ack_pending(nc, "refine") == 0
        await asyncio.sleep(1.0)
        job = await get(stub, job_id)
        # The upscale service in this stack created the finish consumer, so it exists; it never
        # delivered a task and none waits for it.
        finish = await nc.jetstream().consumer_info(jetstream.TASKS_STREAM, jetstream.consumer_name("finish"))
        assert int(finish.delivered.consumer_seq or 0) == 0 and int(finish.num_pending or 0) == 0
        await nc.drain()
    assert job.state == S.JOB_STATE_CANCELLED
    assert not any(s.stage in (S.STAGE_FINISH, S.STAGE_MINT) for s in job.stages)
