"""The shared worker loop against a real nats-server: ack, nak, term, dead-letter, redelivery."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import KeyWrongLastSequenceError

from ganfolk.runtime import jetstream
from ganfolk.runtime.errors import InvalidArgument, Transient
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.worker import StageHandler, StageWorker, TaskCancelled, TaskContext
from ganfolk.v1 import common_pb2, events_pb2, text_pb2

ROOT = Path(__file__).resolve().parents[2]
Handler = Callable[[text_pb2.PromptsRequest, TaskContext], Awaitable[text_pb2.PromptsResponse]]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def task(stage: str, job_id: str, count: int = 2) -> tuple[str, bytes]:
    task_id = unique("task")
    meta = common_pb2.TaskMeta(job_id=job_id, task_id=task_id, stage=stage)
    return task_id, text_pb2.PromptsRequest(count=count, meta=meta).SerializeToString()


async def ok_handler(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
    return text_pb2.PromptsResponse(prompts=[text_pb2.PortraitPrompt(text="p")] * req.count)


@contextlib.asynccontextmanager
async def running(nc: NATS, stage: str, handle: Handler, **policy: Any) -> AsyncIterator[StageWorker]:
    defaults: dict[str, Any] = {
        "ack_wait": 2.0,
        "max_deliver": 3,
        "retry_delays": (0.2,),
        "fetch_timeout": 0.3,
    }
    worker = StageWorker(
        nc,
        StageHandler(
            stage, text_pb2.PromptsRequest, handle, "prompts", StagePolicy(**{**defaults, **policy})
        ),
    )
    await worker.setup()
    runner = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.stop(grace=5)
        await asyncio.wait_for(runner, 10)


async def next_event(sub: Any, timeout: float = 10) -> events_pb2.StageEvent:
    msg = await sub.next_msg(timeout=timeout)
    return events_pb2.StageEvent.FromString(msg.data)


async def pending(nc: NATS, stage: str) -> tuple[int, int]:
    info = await nc.jetstream().consumer_info(jetstream.TASKS_STREAM, jetstream.consumer_name(stage))
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)


async def test_success_publishes_result_then_acks(nc: NATS) -> None:
    stage, job = unique("ok"), unique("job")
    events = await nc.subscribe(jetstream.event_subject(job))
    async with running(nc, stage, ok_handler):
        task_id, payload = task(stage, job, count=3)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        event = await next_event(events)
        assert event.WhichOneof("outcome") == "result"
        assert len(event.result.prompts.prompts) == 3
        assert event.meta.task_id == task_id and event.attempt == 1
        await asyncio.sleep(0.3)
        assert await pending(nc, stage) == (0, 0)


async def test_duplicate_task_publish_is_dropped(nc: NATS) -> None:
    stage = unique("dup")
    js = nc.jetstream()
    await jetstream.ensure_consumer(js, stage, StagePolicy())
    task_id, payload = task(stage, unique("job"))
    first = await jetstream.publish_task(js, stage, payload, task_id)
    second = await jetstream.publish_task(js, stage, payload, task_id)
    assert first == second
    assert (await pending(nc, stage))[0] == 1


async def test_transient_failure_is_nakked_and_retried(nc: NATS) -> None:
    stage, job = unique("nak"), unique("job")
    attempts: list[int] = []

    async def flaky(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise Transient("GPU busy")
        return await ok_handler(req, ctx)

    events = await nc.subscribe(jetstream.event_subject(job))
    async with running(nc, stage, flaky):
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        failure = await next_event(events)
        assert failure.failure.code == "UNAVAILABLE" and failure.failure.retryable
        result = await next_event(events)
        assert result.WhichOneof("outcome") == "result" and result.attempt == 2
    assert attempts == [1, 2]


async def test_bad_input_is_terminated_and_dead_lettered(nc: NATS) -> None:
    stage, job = unique("term"), unique("job")
    calls: list[int] = []

    async def strict(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        calls.append(ctx.attempt)
        raise InvalidArgument("count must be at most 100")

    events = await nc.subscribe(jetstream.event_subject(job))
    dlq = await nc.subscribe(jetstream.dlq_subject(stage))
    async with running(nc, stage, strict):
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        event = await next_event(events)
        assert event.failure.code == "INVALID_ARGUMENT" and not event.failure.retryable
        assert "count must be at most 100" in event.failure.message
        dead = await dlq.next_msg(timeout=5)
        assert dead.data == payload
        assert dead.headers["Ganfolk-Reason"].startswith("INVALID_ARGUMENT")
        await asyncio.sleep(0.5)
    assert calls == [1]
    assert await pending(nc, stage) == (0, 0)


async def test_retries_exhausted_goes_to_dead_letter(nc: NATS) -> None:
    stage, job = unique("exhaust"), unique("job")
    calls: list[int] = []

    async def down(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        calls.append(ctx.attempt)
        raise ConnectionError("LLM endpoint refused")

    dlq = await nc.subscribe(jetstream.dlq_subject(stage))
    async with running(nc, stage, down, max_deliver=2):
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        dead = await dlq.next_msg(timeout=10)
        assert dead.headers["Ganfolk-Deliveries"] == "2"
        assert "refused" in dead.headers["Ganfolk-Reason"]
    assert calls == [1, 2]


async def test_undecodable_task_is_dead_lettered(nc: NATS) -> None:
    stage = unique("garbage")
    dlq = await nc.subscribe(jetstream.dlq_subject(stage))
    async with running(nc, stage, ok_handler):
        await jetstream.publish_task(nc.jetstream(), stage, b"\xff\xff\xff not protobuf", unique("t"))
        dead = await dlq.next_msg(timeout=5)
        assert "undecodable PromptsRequest" in dead.headers["Ganfolk-Reason"]


async def test_heartbeat_keeps_long_task_from_redelivery(nc: NATS) -> None:
    stage, job = unique("long"), unique("job")
    calls: list[int] = []

    async def slow(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        calls.append(ctx.attempt)
        await asyncio.sleep(3.0)  # three times the ack wait
        return await ok_handler(req, ctx)

    events = await nc.subscribe(jetstream.event_subject(job))
    async with running(nc, stage, slow, ack_wait=1.0, concurrency=2):
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        event = await next_event(events, timeout=15)
        assert event.WhichOneof("outcome") == "result"
    assert calls == [1]


async def test_progress_events_reach_subscribers(nc: NATS) -> None:
    stage, job = unique("progress"), unique("job")

    async def reporting(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        await ctx.progress(50.0, "half way")
        return await ok_handler(req, ctx)

    events = await nc.subscribe(jetstream.event_subject(job))
    async with running(nc, stage, reporting):
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        progress = await next_event(events)
        assert progress.progress.percent == 50.0 and progress.progress.message == "half way"
        assert (await next_event(events)).WhichOneof("outcome") == "result"


async def test_throttled_progress_sends_first_images_final_and_due_reports(nc: NATS) -> None:
    stage, job = unique("throttle"), unique("job")
    sent: list[bool] = []
    snapshot = common_pb2.ImageRef(uri="mem://snap.png")

    async def reporting(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        for step in range(5):  # a burst: only the first goes out
            sent.append(await ctx.progress_throttled(step, f"step {step}", min_interval_s=60))
        sent.append(await ctx.progress_throttled(5, "snapshot", [snapshot], min_interval_s=60))
        sent.append(await ctx.progress_throttled(6, "held back", min_interval_s=60))
        await asyncio.sleep(0.2)
        sent.append(await ctx.progress_throttled(7, "due again", min_interval_s=0.1))
        sent.append(await ctx.progress_throttled(8, "done", min_interval_s=60, final=True))
        return await ok_handler(req, ctx)

    events = await nc.subscribe(jetstream.event_subject(job))
    async with running(nc, stage, reporting):
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        messages = []
        while (event := await next_event(events)).WhichOneof("outcome") == "progress":
            messages.append(event.progress.message)
        assert event.WhichOneof("outcome") == "result"
    assert messages == ["step 0", "snapshot", "due again", "done"]
    assert sent == [True, False, False, False, False, True, False, True, True]


async def test_held_back_progress_still_heartbeats(nc: NATS) -> None:
    """A handler that reports often but is throttled keeps its task past ack_wait."""
    stage, job = unique("throttle-hb"), unique("job")
    attempts: list[int] = []

    async def slow(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        attempts.append(ctx.attempt)
        for step in range(12):  # 2.4 s of work against a 1 s ack_wait, one event only
            await ctx.progress_throttled(step, "", min_interval_s=60)
            await asyncio.sleep(0.2)
        return await ok_handler(req, ctx)

    events = await nc.subscribe(jetstream.event_subject(job))
    # The loop's own heartbeat is pushed past the task, so only the handler's reports keep it;
    # a free second slot would pick up a redelivery.
    async with running(nc, stage, slow, ack_wait=1.0, heartbeat=30.0, concurrency=2):
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        assert (await next_event(events)).WhichOneof("outcome") == "progress"
        result = await next_event(events)
        assert result.WhichOneof("outcome") == "result" and result.attempt == 1
    assert attempts == [1]


async def test_task_of_dead_consumer_moves_to_dlq_after_max_deliveries(nc: NATS) -> None:
    """Workers that crash on every delivery never ack; the advisory moves the task aside."""
    stage, job = unique("crashy"), unique("job")
    js = nc.jetstream()
    policy = StagePolicy(ack_wait=0.5, max_deliver=2, fetch_timeout=0.3)
    watcher = StageWorker(nc, StageHandler(stage, text_pb2.PromptsRequest, ok_handler, "prompts", policy))
    await watcher.setup()  # subscribes to the advisory; its loop is not run
    dlq = await nc.subscribe(jetstream.dlq_subject(stage))
    events = await nc.subscribe(jetstream.event_subject(job))
    task_id, payload = task(stage, job)
    await jetstream.publish_task(js, stage, payload, task_id)
    crashing = await js.pull_subscribe_bind(
        durable=jetstream.consumer_name(stage), stream=jetstream.TASKS_STREAM
    )
    for _ in range(2):  # fetch and "crash": never ack
        msgs = await crashing.fetch(1, timeout=5)
        assert msgs[0].data == payload
    # The server checks max deliveries when it would deliver again, i.e. on the next pull.
    with contextlib.suppress(Exception):
        await crashing.fetch(1, timeout=2)
    dead = await dlq.next_msg(timeout=10)
    assert dead.data == payload and "no ack after 2 deliveries" in dead.headers["Ganfolk-Reason"]
    failure = await next_event(events)
    assert failure.failure.code == "DEADLINE_EXCEEDED" and failure.meta.task_id == task_id
    await asyncio.sleep(0.3)
    assert (await pending(nc, stage))[0] == 0
    await watcher.stop(1)
    # An abandoned pull subscription would hold the session connection's drain to its 30 s timeout.
    for sub in (crashing, dlq, events):
        await sub.unsubscribe()


def start_sample_service(nats_url: str, stage: str, calls: Path, **env: str) -> subprocess.Popen[bytes]:
    full_env = {
        **os.environ,
        "GANFOLK_NATS_URL": nats_url,
        "GANFOLK_GRPC_PORT": "0",
        "GANFOLK_GRPC_GRACE_SECONDS": env.pop("GRACE", "20"),
        "SAMPLE_STAGE": stage,
        "SAMPLE_CALLS_FILE": str(calls),
        **env,
    }
    return subprocess.Popen([sys.executable, "-m", "tests.runtime.sample_service"], cwd=ROOT, env=full_env)


async def wait_for_calls(calls: Path, n: int, timeout: float = 20) -> list[str]:
    for _ in range(int(timeout / 0.1)):
        if calls.exists() and len(lines := calls.read_text().splitlines()) >= n:
            return lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {n} handler calls, saw {calls.read_text() if calls.exists() else 'none'}")


async def test_killed_worker_task_is_redelivered_not_lost(nc: NATS, nats_server: Any, tmp_path: Path) -> None:
    stage, job = unique("killed"), unique("job")
    calls = tmp_path / "calls.txt"
    events = await nc.subscribe(jetstream.event_subject(job))
    victim = start_sample_service(
        nats_server.url, stage, calls, SAMPLE_WORK_SECONDS="60", SAMPLE_ACK_WAIT="1"
    )
    try:
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        await wait_for_calls(calls, 1)
        victim.send_signal(signal.SIGKILL)  # dies mid-task without acking
        victim.wait(10)
        survivor = start_sample_service(
            nats_server.url, stage, calls, SAMPLE_WORK_SECONDS="0", SAMPLE_ACK_WAIT="1"
        )
        try:
            event = await next_event(events, timeout=30)
            assert event.WhichOneof("outcome") == "result" and event.meta.task_id == task_id
            assert event.attempt == 2
        finally:
            survivor.terminate()
            survivor.wait(30)
    finally:
        if victim.poll() is None:
            victim.kill()
    lines = calls.read_text().splitlines()
    assert [line.split()[:2] for line in lines] == [[task_id, "1"], [task_id, "2"]]


async def test_sigterm_lets_inflight_task_finish(nc: NATS, nats_server: Any, tmp_path: Path) -> None:
    stage, job = unique("sigterm"), unique("job")
    calls = tmp_path / "calls.txt"
    events = await nc.subscribe(jetstream.event_subject(job))
    proc = start_sample_service(nats_server.url, stage, calls, SAMPLE_WORK_SECONDS="2", SAMPLE_ACK_WAIT="5")
    try:
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        await wait_for_calls(calls, 1)
        proc.send_signal(signal.SIGTERM)
        event = await next_event(events, timeout=20)
        assert event.WhichOneof("outcome") == "result" and event.attempt == 1
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert await pending(nc, stage) == (0, 0)


async def test_sigterm_past_grace_hands_task_back(nc: NATS, nats_server: Any, tmp_path: Path) -> None:
    stage, job = unique("handback"), unique("job")
    calls = tmp_path / "calls.txt"
    events = await nc.subscribe(jetstream.event_subject(job))
    proc = start_sample_service(
        nats_server.url, stage, calls, SAMPLE_WORK_SECONDS="60", SAMPLE_ACK_WAIT="30", GRACE="0.5"
    )
    task_id, payload = task(stage, job)
    try:
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        await wait_for_calls(calls, 1)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # nak'ed without delay: picked up at once by the next worker, well before the 30 s ack wait.
    async with running(nc, stage, ok_handler, ack_wait=30.0):
        event = await next_event(events, timeout=10)
        assert event.WhichOneof("outcome") == "result" and event.meta.task_id == task_id
        assert event.attempt == 2


async def test_kv_compare_and_set_conflict(nc: NATS) -> None:
    kv = await jetstream.ensure_kv(nc.jetstream(), unique("kvtest"))
    rev = await jetstream.kv_cas(kv, "job-1", b"v1", 0)
    with pytest.raises(KeyWrongLastSequenceError):
        await jetstream.kv_cas(kv, "job-1", b"again", 0)  # create when it exists
    await jetstream.kv_cas(kv, "job-1", b"v2", rev)
    with pytest.raises(KeyWrongLastSequenceError):
        await jetstream.kv_cas(kv, "job-1", b"stale", rev)  # someone wrote since rev

    async def bump(_: int) -> None:
        def inc(value: bytes | None) -> bytes:
            return str(int(value or b"0") + 1).encode()

        await jetstream.kv_update(kv, "counter", inc)

    await asyncio.gather(*(bump(i) for i in range(20)))
    assert (await jetstream.kv_read(kv, "counter")).value == b"20"


async def test_kv_update_from_a_known_entry(nc: NATS, monkeypatch: pytest.MonkeyPatch) -> None:
    """A current guess saves the read; a stale one costs a refused write, never a lost update;
    a guess that ``mutate`` keeps or fails on is read again before anything is decided."""
    kv = await jetstream.ensure_kv(nc.jetstream(), unique("kvtest"))
    reads: list[str] = []
    real_read = jetstream.kv_read

    async def counting_read(bucket: Any, key: str) -> jetstream.Versioned:
        reads.append(key)
        return await real_read(bucket, key)

    monkeypatch.setattr(jetstream, "kv_read", counting_read)

    def append(suffix: bytes) -> Callable[[bytes | None], bytes]:
        return lambda value: (value or b"") + suffix

    rev = await jetstream.kv_cas(kv, "k", b"a", 0)
    value, rev = await jetstream.kv_update(kv, "k", append(b"b"), known=jetstream.Versioned(b"a", rev))
    assert (value, reads) == (b"ab", [])
    await jetstream.kv_cas(kv, "k", b"ab+other", rev)  # another writer: our guess is now stale
    value, rev = await jetstream.kv_update(kv, "k", append(b"c"), known=jetstream.Versioned(b"ab", rev))
    assert value == b"ab+otherc" and reads == ["k"]

    def only_if_other(value: bytes | None) -> bytes | None:
        assert value is not None
        if b"other" not in value:
            raise ValueError("a stale value")
        return None if value.endswith(b"!") else value + b"!"

    stale = jetstream.Versioned(b"ab", 1)
    reads.clear()
    value, _ = await jetstream.kv_update(kv, "k", only_if_other, known=stale)  # fails on the guess
    assert value == b"ab+otherc!" and reads == ["k"]
    reads.clear()
    kept, _ = await jetstream.kv_update(kv, "k", lambda v: None, known=jetstream.Versioned(b"old", 1))
    assert kept == b"ab+otherc!" and reads == ["k"]  # "no change" is decided on what is stored


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Wait until ``check()`` (awaited when it returns an awaitable) is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def test_cancelled_jobs_mirror_the_bucket_without_reads(
    nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads the bucket until the watch has replayed it, then answers from memory and follows it."""
    kv = await jetstream.ensure_kv(nc.jetstream(), jetstream.CANCEL_BUCKET, history=1)
    early, late = unique("job"), unique("job")
    await kv.put(early, b"before the watch")
    cancels = jetstream.CancelledJobs(kv)
    reads: list[str] = []
    real_read = jetstream.kv_read

    async def counting_read(bucket: Any, key: str) -> jetstream.Versioned:
        reads.append(key)
        return await real_read(bucket, key)

    monkeypatch.setattr(jetstream, "kv_read", counting_read)
    assert await cancels.is_cancelled(early) and reads == [early]  # not started: a direct read
    cancels.start()
    try:
        await eventually(lambda: cancels.current)
        reads.clear()
        assert await cancels.is_cancelled(early)
        assert not await cancels.is_cancelled(late)
        await kv.put(late, b"later")
        await eventually(lambda: cancels.is_cancelled(late))
        await kv.delete(late)
        await eventually(lambda: late not in cancels._entries)
        assert reads == []  # every answer after the replay came from memory
    finally:
        await cancels.stop()
    assert not cancels.current


async def test_cancel_during_a_task_is_seen_without_kv_reads(
    nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler polling ``ctx.cancelled()`` sees a cancel written while it runs; the polls read no KV."""
    stage, job = unique("cancelwatch"), unique("job")
    reads: list[str] = []
    real_read = jetstream.kv_read

    async def counting_read(bucket: Any, key: str) -> jetstream.Versioned:
        reads.append(key)
        return await real_read(bucket, key)

    polls = 0

    async def polling(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        nonlocal polls
        while not await ctx.cancelled():
            polls += 1
            await asyncio.sleep(0.005)
        raise TaskCancelled()

    kv = await jetstream.ensure_kv(nc.jetstream(), jetstream.CANCEL_BUCKET, history=1)
    events = await nc.subscribe(jetstream.event_subject(job))
    async with running(nc, stage, polling) as worker:
        await eventually(lambda: worker._cancels is not None and worker._cancels.current)
        monkeypatch.setattr(jetstream, "kv_read", counting_read)
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        await eventually(lambda: polls >= 5)
        await kv.put(job, b"user asked")
        event = await next_event(events)
        assert event.failure.code == "CANCELLED" and not event.failure.retryable
    assert reads == [] and polls >= 5


async def test_cancelled_job_task_is_skipped(nc: NATS) -> None:
    stage, job = unique("cancel"), unique("job")
    calls: list[int] = []

    async def counting(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        calls.append(ctx.attempt)
        return await ok_handler(req, ctx)

    kv = await jetstream.ensure_kv(nc.jetstream(), jetstream.CANCEL_BUCKET, history=1)
    await kv.put(job, b"user asked")
    events = await nc.subscribe(jetstream.event_subject(job))
    async with running(nc, stage, counting):
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        event = await next_event(events)
        assert event.failure.code == "CANCELLED" and not event.failure.retryable
        await asyncio.sleep(0.3)
        assert await pending(nc, stage) == (0, 0)
    assert calls == []


# --------------------------------------------------------------------------- settle order, takeover


@pytest.fixture
def own_broker(tmp_path: Path) -> Any:
    """A nats-server of this test's own, to restart without disturbing the session's."""
    from tests.fixtures.nats import NatsServer

    server = NatsServer(tmp_path / "own-nats")
    server.start()
    yield server
    server.stop()


async def stored_events(nc: NATS, job: str) -> list[events_pb2.StageEvent]:
    """The job's events as the stream holds them (not what a live subscription happened to see)."""
    js = nc.jetstream()
    sub = await js.subscribe(
        jetstream.event_subject(job), ordered_consumer=True, deliver_policy=jetstream.DeliverPolicy.ALL
    )
    try:
        info = await js.stream_info(jetstream.EVENTS_STREAM, subjects_filter=jetstream.event_subject(job))
        count = (info.state.subjects or {}).get(jetstream.event_subject(job), 0)
        return [events_pb2.StageEvent.FromString((await sub.next_msg(timeout=10)).data) for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def test_final_failure_is_published_across_a_broker_restart_before_the_task_is_termed(
    own_broker: Any,
) -> None:
    """The broker goes away as the handler fails for good: the failure event is retried until the
    broker is back, and only then is the task termed (once: it is never run again)."""
    stage, job = unique("blip"), unique("job")
    calls: list[int] = []
    worker_nc = await jetstream.connect(own_broker.url, "worker")
    test_nc = await jetstream.connect(own_broker.url, "test")
    await jetstream.ensure_streams(test_nc.jetstream())

    async def breaks_with_the_broker(
        req: text_pb2.PromptsRequest, ctx: TaskContext
    ) -> text_pb2.PromptsResponse:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            await asyncio.to_thread(own_broker.stop)
        raise InvalidArgument("count must be at most 100")

    try:
        # An outage shorter than the ack wait: a blip, not a dead worker.
        async with running(worker_nc, stage, breaks_with_the_broker, ack_wait=20.0, heartbeat=0.5):
            task_id, payload = task(stage, job)
            await jetstream.publish_task(test_nc.jetstream(), stage, payload, task_id)
            for _ in range(300):
                if calls:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(8.0)  # longer than a JetStream publish waits for its ack (5 s)
            await asyncio.to_thread(own_broker.start)
            failures: list[events_pb2.StageEvent] = []
            for _ in range(600):
                with contextlib.suppress(Exception):
                    failures = [e for e in await stored_events(test_nc, job) if e.HasField("failure")]
                if failures and await pending(test_nc, stage) == (0, 0):
                    break
                await asyncio.sleep(0.1)
        assert [(f.failure.code, f.failure.retryable, f.meta.task_id) for f in failures] == [
            ("INVALID_ARGUMENT", False, task_id)
        ]
        info = await test_nc.jetstream().consumer_info(jetstream.TASKS_STREAM, jetstream.consumer_name(stage))
        assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
        assert calls == [1]
        dead = await test_nc.jetstream().get_last_msg(jetstream.DLQ_STREAM, jetstream.dlq_subject(stage))
        assert dead.data == payload
    finally:
        await worker_nc.close()
        await test_nc.close()


async def test_killed_worker_task_is_taken_over_within_the_ack_wait(
    nc: NATS, nats_server: Any, tmp_path: Path
) -> None:
    """kill -9 mid-task: another replica gets the task about one ack wait after the last heartbeat."""
    stage, job = unique("takeover"), unique("job")
    ack_wait = 1.5  # heartbeats every 0.5 s
    calls = tmp_path / "calls.txt"
    events = await nc.subscribe(jetstream.event_subject(job))
    victim = start_sample_service(
        nats_server.url, stage, calls, SAMPLE_WORK_SECONDS="120", SAMPLE_ACK_WAIT=str(ack_wait)
    )
    survivor_calls: list[int] = []

    async def survivor(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        survivor_calls.append(ctx.attempt)
        return await ok_handler(req, ctx)

    try:
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        await wait_for_calls(calls, 1, timeout=60)
        await asyncio.sleep(3 * ack_wait)  # the victim's heartbeats hold the task past its ack wait
        # The same policy as the victim's (sample_service), so the consumer is not changed.
        async with running(nc, stage, survivor, ack_wait=ack_wait, max_deliver=3, concurrency=1):
            assert survivor_calls == []
            loop = asyncio.get_running_loop()
            victim.send_signal(signal.SIGKILL)
            killed_at = loop.time()
            await asyncio.to_thread(victim.wait, 10)
            event = await next_event(events, timeout=60)
            taken_over_s = loop.time() - killed_at
            assert event.WhichOneof("outcome") == "result" and event.meta.task_id == task_id
            assert event.attempt == 2
            await asyncio.sleep(2 * ack_wait)
            with pytest.raises(NatsTimeoutError):  # completed once: no second result
                await next_event(events, timeout=0.5)
    finally:
        if victim.poll() is None:
            victim.kill()
    print(f"task taken over {taken_over_s:.2f}s after kill -9 (ack wait {ack_wait}s)")
    # At most one ack wait after the last heartbeat (<= kill time), plus a fetch and a busy CPU.
    assert taken_over_s < ack_wait + 5.0
    assert survivor_calls == [2]
    assert await pending(nc, stage) == (0, 0)


async def test_live_worker_task_far_longer_than_ack_wait_is_never_redelivered(
    nc: NATS, nats_server: Any, tmp_path: Path
) -> None:
    """A real service process works 6x its ack wait while an idle replica waits: delivered once."""
    stage, job = unique("livelong"), unique("job")
    ack_wait = 1.5
    calls = tmp_path / "calls.txt"
    events = await nc.subscribe(jetstream.event_subject(job))
    worker = start_sample_service(
        nats_server.url, stage, calls, SAMPLE_WORK_SECONDS=str(6 * ack_wait), SAMPLE_ACK_WAIT=str(ack_wait)
    )
    idle_calls: list[int] = []

    async def idle(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        idle_calls.append(ctx.attempt)
        return await ok_handler(req, ctx)

    try:
        task_id, payload = task(stage, job)
        await jetstream.publish_task(nc.jetstream(), stage, payload, task_id)
        await wait_for_calls(calls, 1, timeout=60)
        async with running(nc, stage, idle, ack_wait=ack_wait, max_deliver=3, concurrency=1):
            event = await next_event(events, timeout=60)
            assert event.WhichOneof("outcome") == "result" and event.attempt == 1
        info = await nc.jetstream().consumer_info(jetstream.TASKS_STREAM, jetstream.consumer_name(stage))
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)
    assert idle_calls == []
    assert int(info.num_redelivered or 0) == 0 and int(info.delivered.consumer_seq) == 1
    assert [line.split()[:2] for line in calls.read_text().splitlines()] == [[task_id, "1"]]


def test_default_policy_heartbeats_well_within_its_ack_wait() -> None:
    """Defaults: a dead worker's task moves within 20 s; three heartbeats fit in that window."""
    from ganfolk.runtime.service import policy_from_settings
    from ganfolk.runtime.settings import Settings

    policy = StagePolicy()
    assert (policy.ack_wait, round(policy.heartbeat_interval, 2)) == (20.0, 6.67)
    assert policy.redelivery_backoff() == [20.0, 20.0, 40.0, 80.0]
    # An operator's shorter ack wait takes the heartbeat down with it, even a policy's own.
    tuned = policy_from_settings(StagePolicy(heartbeat=20.0), Settings(task_ack_wait_s=6.0))
    assert (tuned.ack_wait, tuned.heartbeat_interval) == (6.0, 2.0)
