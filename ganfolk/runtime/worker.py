"""The one NATS worker loop every service reuses.

A stage handler is a coroutine ``handle(request, ctx) -> response`` over the service's
protobuf messages. The loop owns delivery semantics so that no handler has to:

* durable pull consumer, bounded fetch (never more tasks than free slots);
* ack only after the result event is published (at-least-once; results carry the task
  id as message id, so a redelivered task's second result is dropped by JetStream);
* ``in_progress()`` heartbeats while a handler runs, so long work is not redelivered;
* transient failure -> ``nak(delay)``; bad input, or the last attempt -> ``term()`` and a
  copy on the dead-letter subject; either way the failure event is published (retried
  across a broker restart) before the task is settled, so no failure is lost; a task
  whose worker died ``max_deliver`` times is moved to the dead-letter subject from the
  server's max-deliveries advisory;
* on stop: no new fetches, in-flight tasks finish within the grace period or are nak'ed
  for immediate redelivery elsewhere, then the connection is drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import tenacity
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from ganfolk.runtime import jetstream, metrics
from ganfolk.runtime.errors import classify, describe
from ganfolk.runtime.logs import log_context
from ganfolk.v1 import common_pb2, events_pb2

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=Message)


def settle_retrying() -> tenacity.AsyncRetrying:
    """Retry policy for publishing a finished task's result and acking it.

    A broker restart must not throw finished work away: both steps are idempotent (the
    result carries a de-duplication id), so they are retried until the broker is back.
    """
    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_delay(120),
        wait=tenacity.wait_exponential(multiplier=0.2, max=5),
        retry=tenacity.retry_if_exception_type((NatsError, TimeoutError, ConnectionError)),
        reraise=True,
    )


class TaskCancelled(Exception):
    """Raised by a handler that saw ``ctx.cancelled()``: the task is acked and reported cancelled."""


class TaskContext:
    """What a handler may do besides returning a result: report progress, heartbeat."""

    def __init__(
        self,
        js: JetStreamContext,
        msg: Msg,
        meta: common_pb2.TaskMeta,
        stage: str,
        cancels: jetstream.CancelledJobs | None = None,
    ) -> None:
        self._js = js
        self._cancels = cancels
        self._msg = msg
        self.meta = meta
        self.stage = stage
        self.attempt = int(msg.metadata.num_delivered or 1)
        self._progress_sent: float | None = None  # monotonic time of the last progress event

    async def heartbeat(self) -> None:
        """Reset the ack timer (the loop also does this on a timer)."""
        await self._msg.in_progress()

    async def cancelled(self) -> bool:
        """True once the task's job was cancelled; long handlers check it between steps."""
        if self._cancels is None:
            return False
        return await self._cancels.is_cancelled(self.meta.job_id)

    async def progress(
        self, percent: float, message: str = "", images: Sequence[common_pb2.ImageRef] = ()
    ) -> None:
        """Publish a progress event on the job's event subject, and heartbeat."""
        event = events_pb2.StageEvent(
            progress=events_pb2.StageProgress(percent=percent, message=message, images=list(images))
        )
        await publish_event(self._js, self.meta, self.attempt, event)
        await self._msg.in_progress()
        self._progress_sent = time.monotonic()

    async def progress_throttled(
        self,
        percent: float,
        message: str = "",
        images: Sequence[common_pb2.ImageRef] = (),
        *,
        min_interval_s: float,
        final: bool = False,
    ) -> bool:
        """Like :meth:`progress`, at most once per ``min_interval_s``; True when an event went out.

        For handlers that can report after every step: watchers see steady progress without
        an event per step. The first report, a ``final`` one and one carrying ``images`` (a
        snapshot nobody should miss) always go out; a report held back still heartbeats, so a
        task that reports steadily is never redelivered.
        """
        due = self._progress_sent is None or time.monotonic() - self._progress_sent >= min_interval_s
        if due or final or images:
            await self.progress(percent, message, images)
            return True
        await self.heartbeat()
        return False


@dataclass
class StageHandler(Generic[Req]):
    """A stage served by a service: its request type, handler and delivery policy."""

    stage: str
    request_type: type[Req]
    handle: Callable[[Req, TaskContext], Awaitable[Message]]
    # Field of events_pb2.StageResult that carries the response.
    result_field: str
    policy: jetstream.StagePolicy = field(default_factory=jetstream.StagePolicy)


async def publish_event(
    js: JetStreamContext,
    meta: common_pb2.TaskMeta,
    attempt: int,
    event: events_pb2.StageEvent,
    msg_id: str = "",
) -> None:
    event.meta.CopyFrom(meta)
    event.attempt = attempt
    ts = Timestamp()
    ts.GetCurrentTime()
    event.time.CopyFrom(ts)
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    await js.publish(jetstream.event_subject(meta.job_id), event.SerializeToString(), headers=headers)


def _meta_of(request: Message, stage: str) -> common_pb2.TaskMeta:
    meta = common_pb2.TaskMeta()
    if "meta" in request.DESCRIPTOR.fields_by_name:
        meta.CopyFrom(request.meta)  # type: ignore[attr-defined]
    meta.stage = meta.stage or stage
    return meta


class StageWorker:
    """Runs one stage's consumer loop until :meth:`stop`."""

    def __init__(self, nc: NATS, handler: StageHandler[Any]) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.handler = handler
        self.policy = handler.policy
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(self.policy.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._advisory_sub: Any = None
        self._cancels: jetstream.CancelledJobs | None = None
        self._lag_checked = 0.0
        self.consumer = jetstream.consumer_name(handler.stage)

    async def setup(self) -> None:
        await jetstream.ensure_streams(self.js)
        await jetstream.ensure_consumer(self.js, self.handler.stage, self.policy)
        cancel_kv = await jetstream.ensure_kv(self.js, jetstream.CANCEL_BUCKET, history=1)
        self._cancels = jetstream.CancelledJobs(cancel_kv)
        self._cancels.start()
        self._advisory_sub = await self.nc.subscribe(
            jetstream.max_deliveries_advisory(jetstream.TASKS_STREAM, self.consumer),
            cb=self._on_max_deliveries,
        )

    async def run(self) -> None:
        """Fetch and process tasks until stopped; returns after in-flight work settles."""
        sub = await self.js.pull_subscribe_bind(durable=self.consumer, stream=jetstream.TASKS_STREAM)
        log.info("worker started", extra={"stage": self.handler.stage, "consumer": self.consumer})
        try:
            while not self._stopping.is_set():
                await self._slots.acquire()  # wait for one free slot
                if self._stopping.is_set():
                    self._slots.release()
                    break
                free = 1
                while free < self.policy.concurrency and not self._slots.locked():
                    await self._slots.acquire()
                    free += 1
                try:
                    msgs = await sub.fetch(batch=free, timeout=self.policy.fetch_timeout)
                except (TimeoutError, NatsTimeoutError):
                    msgs = []
                except Exception as exc:  # broker restart: the client reconnects by itself
                    log.warning("fetch failed: %s", exc)
                    msgs = []
                for _ in range(free - len(msgs)):
                    self._slots.release()
                if self._stopping.is_set():  # fetched while stopping: hand back at once
                    for msg in msgs:
                        with contextlib.suppress(Exception):
                            await msg.nak()
                        self._slots.release()
                    break
                for msg in msgs:
                    task = asyncio.create_task(self._run_one(msg))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                await self._report_lag()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def stop(self, grace: float) -> None:
        """Stop fetching; let in-flight tasks finish within ``grace`` seconds, else hand them back."""
        self._stopping.set()
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if self._advisory_sub is not None:
            with contextlib.suppress(Exception):
                await self._advisory_sub.unsubscribe()
        if self._cancels is not None:
            await self._cancels.stop()

    async def _run_one(self, msg: Msg) -> None:
        try:
            await self._process(msg)
        except asyncio.CancelledError:
            # Shutting down past the grace period: give the task back for immediate redelivery.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception:
            log.exception("unexpected error handling a task; leaving it to redelivery")
        finally:
            self._slots.release()

    async def _process(self, msg: Msg) -> None:
        stage = self.handler.stage
        attempt = int(msg.metadata.num_delivered or 1)
        start = time.perf_counter()
        try:
            request = self.handler.request_type.FromString(msg.data)
        except DecodeError as exc:
            await self._dead_letter(msg, f"undecodable {self.handler.request_type.__name__}: {exc}")
            await msg.term()
            metrics.TASKS.labels(stage, "terminated").inc()
            return
        meta = _meta_of(request, stage)
        ctx = TaskContext(self.js, msg, meta, stage, self._cancels)
        with log_context(job_id=meta.job_id, task_id=meta.task_id, stage=stage, attempt=attempt):
            if await ctx.cancelled():
                await self._skip_cancelled(msg, meta, attempt)
                return
            # Heartbeats go on until the task is settled: publishing its outcome may wait out a
            # broker restart, and the task must not be redelivered meanwhile.
            heartbeat = asyncio.create_task(self._heartbeat(msg))
            try:
                await self._run_handler(msg, request, ctx, start)
            finally:
                heartbeat.cancel()

    async def _run_handler(self, msg: Msg, request: Message, ctx: TaskContext, start: float) -> None:
        stage, meta, attempt = self.handler.stage, ctx.meta, ctx.attempt
        try:
            response = await self.handler.handle(request, ctx)
        except TaskCancelled:
            await self._skip_cancelled(msg, meta, attempt)
            return
        except Exception as exc:
            await self._failed(msg, meta, attempt, exc)
            metrics.TASK_DURATION.labels(stage, "failed").observe(time.perf_counter() - start)
            return
        result = events_pb2.StageResult()
        getattr(result, self.handler.result_field).CopyFrom(response)
        event = events_pb2.StageEvent(result=result)
        async for attempt_ in settle_retrying():
            with attempt_:
                await publish_event(self.js, meta, attempt, event, msg_id=f"{meta.task_id}.result")
                await msg.ack_sync()
        metrics.TASKS.labels(stage, "ok").inc()
        metrics.TASK_DURATION.labels(stage, "ok").observe(time.perf_counter() - start)
        log.info("task done", extra={"seconds": round(time.perf_counter() - start, 3)})

    async def _skip_cancelled(self, msg: Msg, meta: common_pb2.TaskMeta, attempt: int) -> None:
        await self._publish_failure(meta, attempt, "CANCELLED", "job was cancelled", retryable=False)
        async for attempt_ in settle_retrying():
            with attempt_:
                await msg.ack_sync()
        metrics.TASKS.labels(self.handler.stage, "cancelled").inc()
        log.info("task skipped: job cancelled")

    async def _heartbeat(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.policy.heartbeat_interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _failed(self, msg: Msg, meta: common_pb2.TaskMeta, attempt: int, exc: Exception) -> None:
        verdict = classify(exc)
        reason = describe(exc)
        last = attempt >= self.policy.max_deliver
        retry = verdict.retryable and not last
        # The event goes out before the task is settled: a termed task never comes back to
        # report a failure whose publish was lost, and its job would wait for the stage timeout.
        await self._publish_failure(meta, attempt, verdict.code.name, reason, retryable=retry)
        if retry:
            delay = self.policy.retry_delay(attempt)
            log.warning("task failed, retrying in %.1fs: %s", delay, reason, exc_info=exc)
            async for attempt_ in settle_retrying():
                with attempt_:
                    await msg.nak(delay=delay)
            metrics.TASKS.labels(self.handler.stage, "retried").inc()
        else:
            log.error("task failed permanently (%s, attempt %d): %s", verdict.code.name, attempt, reason)
            async for attempt_ in settle_retrying():
                with attempt_:
                    await self._dead_letter(msg, f"{verdict.code.name}: {reason}")
                    await msg.term()
            metrics.TASKS.labels(self.handler.stage, "terminated").inc()

    async def _publish_failure(
        self, meta: common_pb2.TaskMeta, attempt: int, code: str, message: str, retryable: bool
    ) -> None:
        """Publish a failure event, retried until the broker takes it (see :func:`settle_retrying`).

        Every failure carries a de-duplication id, so a publish retried after a lost
        acknowledgement is stored once: a final failure one per task, a retryable one per attempt.
        """
        failure = events_pb2.StageFailure(code=code, message=message, retryable=retryable)
        msg_id = f"{meta.task_id}.failed.{attempt}" if retryable else f"{meta.task_id}.failed"
        event = events_pb2.StageEvent(failure=failure)
        async for attempt_ in settle_retrying():
            with attempt_:
                await publish_event(self.js, meta, attempt, event, msg_id=msg_id)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        seq = msg.metadata.sequence.stream
        await self._publish_dlq(msg.subject, msg.data, reason, int(msg.metadata.num_delivered or 0), seq)

    async def _publish_dlq(self, subject: str, data: bytes, reason: str, deliveries: int, seq: int) -> None:
        headers = {
            "Nats-Msg-Id": f"dlq.{jetstream.TASKS_STREAM}.{seq}",
            "Ganfolk-Reason": reason[:1000],
            "Ganfolk-Original-Subject": subject,
            "Ganfolk-Deliveries": str(deliveries),
            "Ganfolk-Stream-Seq": str(seq),
        }
        await self.js.publish(jetstream.dlq_subject(self.handler.stage), data, headers=headers)

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        """The task's workers died on every delivery: move it to the dead-letter subject."""
        try:
            info = json.loads(advisory.data)
            seq = int(info["stream_seq"])
            raw = await self.js.get_msg(jetstream.TASKS_STREAM, seq)
            deliveries = int(info.get("deliveries", self.policy.max_deliver))
            reason = f"no ack after {deliveries} deliveries (worker crashed or timed out)"
            await self._publish_dlq(raw.subject or "", raw.data or b"", reason, deliveries, seq)
            try:
                request = self.handler.request_type.FromString(raw.data or b"")
                meta = _meta_of(request, self.handler.stage)
                await self._publish_failure(meta, deliveries, "DEADLINE_EXCEEDED", reason, retryable=False)
            except DecodeError:
                pass
            with contextlib.suppress(Exception):  # another replica may have removed it already
                await self.js.delete_msg(jetstream.TASKS_STREAM, seq)
            metrics.TASKS.labels(self.handler.stage, "dead_lettered").inc()
            log.error("task moved to dead-letter subject", extra={"stream_seq": seq, "reason": reason})
        except Exception:
            log.exception("could not dead-letter a task after max deliveries")

    async def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_checked < 5.0:
            return
        self._lag_checked = now
        with contextlib.suppress(Exception):
            info = await self.js.consumer_info(jetstream.TASKS_STREAM, self.consumer)
            metrics.CONSUMER_PENDING.labels(jetstream.TASKS_STREAM, self.consumer).set(info.num_pending or 0)
            metrics.CONSUMER_ACK_PENDING.labels(jetstream.TASKS_STREAM, self.consumer).set(
                info.num_ack_pending or 0
            )
