"""Drives portrait jobs through NATS: the coordinator's core. No gRPC here.

* Job state: one KV entry per job (``ganfolk_jobs``), changed only by compare-and-set, so
  any number of coordinator replicas can run; each worker event is consumed by one of them
  (shared durable consumer ``coordinator`` on ``ganfolk.events.*``).
* After a state change the engine publishes the tasks of newly started stages (task ids are
  deterministic, so JetStream drops re-publications) and a ``WatchResponse`` snapshot on
  ``ganfolk.jobs.<id>``, which ``Watch`` replays from the start for late joiners.
* An event is acked only after its state change and its tasks are published; a redelivered
  event re-publishes every in-flight task of the job (harmless duplicates, dropped by id).
* A sweeper re-publishes the tasks of jobs stuck in QUEUED (crash between submit and
  publish) and fails stages that run past their timeout. A stage's timeout counts from its
  start or from the last event of its tasks (progress, a retry, a shard's result),
  whichever came later: a stage whose workers keep reporting (a mint waiting for a slow
  chain) is never cut off, a silent one is.
* Claim check: a result that lists many images (a sample shard, a ranking) is written to
  its task's manifest object in the store *before* the job is updated, keyed by task id, so
  a redelivered event rewrites the same object and a crash in between loses nothing; the
  job itself keeps counts and a few references, so neither its KV entry nor a Watch
  snapshot grows with the number of samples.
* Reads kept off the event path: service infos come from a KV watch (:class:`ServiceInfos`),
  and progress events (no state change) are shown with the job as this replica last
  wrote or read it instead of re-reading it. A state change starts from the entry this
  replica last wrote or read, too: the compare-and-set proves it current, and only a
  refused write (another replica moved the job) costs a read.
* The hand-off's writes overlap where order allows: the manifest object is written
  while the new state is computed (the write of the state waits for it), and the new
  tasks, the cancel marker and the snapshot are published together.
* The sweep reads only active jobs, through an index kept in the jobs bucket, and archives
  jobs finished longer than the retention ago to the store (:mod:`.retention`); ``Get``
  reads the archive when the bucket no longer holds a job.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyWrongLastSequenceError

from ganfolk.runtime import jetstream
from ganfolk.runtime.errors import NotFound
from ganfolk.runtime.logs import log_context
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import events_pb2, jobs_pb2
from services.coordinator import outputs, pipeline, retention, review
from services.coordinator.config import CoordinatorSettings
from services.coordinator.infos import ServiceInfos
from services.coordinator.names import NameChecker

log = logging.getLogger(__name__)
S = jobs_pb2
EVENTS_CONSUMER = "coordinator"
# Jobs remembered for progress snapshots (the most recently touched ones).
RECENT_JOBS = 1024
# (job, stage) pairs whose last sign of life is remembered (the most recently active ones).
RECENT_ACTIVITY = 4 * RECENT_JOBS


class Engine:
    def __init__(self, nc: NATS, settings: CoordinatorSettings, store: ObjectStore) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.settings = settings
        self.store = store
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._recent: OrderedDict[str, jobs_pb2.Job] = OrderedDict()
        # The entries behind ``_recent`` (bytes + revision): where the next update starts.
        self._entries: OrderedDict[str, jetstream.Versioned] = OrderedDict()
        # (job, stage) -> when a worker was last heard from about the stage (this replica's view).
        self._activity: OrderedDict[tuple[str, int], float] = OrderedDict()
        # When finished jobs were last checked for archiving (time.time()).
        self._archive_checked = 0.0
        # Index keys purged by the last archive pass: their markers are erased on the next.
        self._purged_index_keys: list[str] = []
        self.names = NameChecker(
            settings.text_target(), settings.coordinator_name_check_timeout_s, settings.grpc_auth_token
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await jetstream.ensure_streams(self.js, self.settings.stream_replicas)
        self.jobs = await jetstream.ensure_kv(self.js, jetstream.JOBS_BUCKET)
        self.index = retention.JobIndex(self.jobs)
        await self._index_existing_jobs()
        self.index.start()
        self.cancels = await jetstream.ensure_kv(self.js, jetstream.CANCEL_BUCKET, history=1)
        self.services = ServiceInfos(await jetstream.ensure_kv(self.js, jetstream.SERVICES_BUCKET, history=1))
        self.services.start()
        with contextlib.suppress(Exception):
            await self.js.add_consumer(
                jetstream.EVENTS_STREAM,
                ConsumerConfig(
                    durable_name=EVENTS_CONSUMER,
                    filter_subject="ganfolk.events.*",
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.NEW,
                    ack_wait=self.settings.coordinator_event_ack_wait_s,
                    max_deliver=20,
                    max_ack_pending=256,
                ),
            )
        self._sub = await self.js.pull_subscribe_bind(durable=EVENTS_CONSUMER, stream=jetstream.EVENTS_STREAM)
        self._tasks = [asyncio.create_task(self._consume()), asyncio.create_task(self._sweep())]

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A pull subscription left open keeps ``nc.drain()`` waiting for its whole timeout
        # (a fetch cut short leaves its inbox with an unfinished message): close it first.
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        await self.services.stop()
        await self.index.stop()
        await self.names.close()

    # ------------------------------------------------------------------ jobs API

    async def submit(
        self, spec: jobs_pb2.JobSpec, idempotency_key: str = "", parent_id: str = ""
    ) -> tuple[jobs_pb2.Job, bool]:
        """Create a job and publish its first tasks; the same key returns the first job."""
        pipeline.validate_spec(spec, self.settings.coordinator_max_samples)
        spec = review.with_review_default(spec, await self.services.get())
        if idempotency_key:
            job_id = pipeline.job_id_for_key(idempotency_key)
            existing = await jetstream.kv_read(self.jobs, job_id)
            if existing.value is not None:
                return jobs_pb2.Job.FromString(existing.value), True
            archived = await self._archived(job_id)
            if archived is not None:  # the key's job finished long ago: still the same job
                return archived, True
        else:
            job_id = f"job-{uuid.uuid4().hex[:24]}"
        job = jobs_pb2.Job(
            job_id=job_id,
            spec=spec,
            state=S.JOB_STATE_QUEUED,
            prompt=spec.prompt,
            idempotency_key=idempotency_key,
            parent_id=parent_id,
        )
        job.created_at.CopyFrom(pipeline.now())
        job.updated_at.CopyFrom(job.created_at)
        value = job.SerializeToString()
        # Indexed before it exists, so that a crash in between leaves the sweep a trace.
        await self.index.activate(job_id, retention.seconds(job.created_at))
        try:
            revision = await jetstream.kv_cas(self.jobs, job_id, value, 0)
        except KeyWrongLastSequenceError:
            current = await jetstream.kv_read(self.jobs, job_id)  # the same key raced us
            return jobs_pb2.Job.FromString(current.value or b""), True
        self._remember(job, jetstream.Versioned(value, revision))
        await self._publish_job(job, jobs_pb2.JobEvent(message="submitted", time=pipeline.now()))
        job = await self._step(job_id, None, republish=False)
        return job, False

    async def get(self, job_id: str) -> jobs_pb2.Job:
        """The job as stored now, or as archived after its retention; NotFound when there is none."""
        entry = await jetstream.kv_read(self.jobs, job_id) if job_id else None
        if entry is None or entry.value is None:
            archived = await self._archived(job_id)
            if archived is None:
                raise NotFound(f"no job {job_id!r}")
            return archived
        job = jobs_pb2.Job.FromString(entry.value)
        self._remember(job, entry)
        return job

    async def _archived(self, job_id: str) -> jobs_pb2.Job | None:
        return await asyncio.to_thread(retention.read_archive, self.store, job_id)

    def _remember(self, job: jobs_pb2.Job, entry: jetstream.Versioned) -> None:
        self._recent[job.job_id] = job
        self._entries[job.job_id] = entry
        for cache in (self._recent, self._entries):
            cache.move_to_end(job.job_id)
            while len(cache) > RECENT_JOBS:
                cache.popitem(last=False)

    async def outputs(
        self, job_id: str, stream: bool, names: Sequence[str] = ()
    ) -> AsyncIterator[jobs_pb2.GetOutputsResponse]:
        """The job's outputs: presigned URLs (S3 store, unless ``stream``) or streamed bytes."""
        job = await self.get(job_id)
        async for part in outputs.job_outputs(
            self.store, job, stream, self.settings.coordinator_output_url_ttl_s, names
        ):
            yield part

    async def list(self, state: int = 0) -> list[jobs_pb2.Job]:
        """The jobs in the bucket, newest first: every active job and those finished within the
        retention (archived ones are found by id)."""
        values = await jetstream.kv_values(self.jobs)
        jobs = [jobs_pb2.Job.FromString(v) for k, v in values.items() if not k.startswith("index.")]
        jobs = [job for job in jobs if not state or job.state == state]
        return sorted(jobs, key=lambda j: (j.created_at.seconds, j.created_at.nanos, j.job_id), reverse=True)

    async def cancel(self, job_id: str, reason: str = "") -> jobs_pb2.Job:
        await self.get(job_id)
        await self.cancels.put(job_id, (reason or "cancelled").encode())

        def mutate(job: jobs_pb2.Job) -> pipeline.Advance | None:
            if job.state in pipeline.TERMINAL:
                return None
            job.state = S.JOB_STATE_CANCELLED
            job.error = f"cancelled: {reason}" if reason else "cancelled"
            return pipeline.Advance([], [])

        shown = jobs_pb2.JobEvent(message=job_error_or("cancelled", reason))
        job, _ = await self._update(job_id, mutate, lambda: shown)
        return job

    async def review(self, request: jobs_pb2.ReviewRequest) -> jobs_pb2.Job:
        """Apply a review action (see :mod:`services.coordinator.review`) by compare-and-set.

        An edited name is checked by the text service first; the check runs outside the
        update, and the update then refuses the action if the job moved on meanwhile.
        """
        request = review.validate_request(request)
        job = await self.get(request.job_id)
        name = review.edited_name(job, request)
        if name and job.state == S.JOB_STATE_AWAITING_REVIEW:
            seed = job.spec.seed + job.review_version
            await self.names.check(name, job.description or job.prompt, await self._sibling_names(job), seed)
        services = await self.services.get()

        def mutate(job: jobs_pb2.Job) -> pipeline.Advance | None:
            return review.apply_review(job, request, services)

        shown = jobs_pb2.JobEvent(
            stage=S.STAGE_REVIEW, message=f"review: {review.decision_name(request.decision)}"
        )
        job, _ = await self._update(request.job_id, mutate, lambda: shown)
        return job

    async def _sibling_names(self, job: jobs_pb2.Job) -> builtins.list[str]:
        """Names of the other portraits of the job's collection (an edited name must differ)."""
        if not job.parent_id:
            return []
        try:
            parent = await self.get(job.parent_id)
        except NotFound:
            return []
        names = []
        for child_id in parent.children:
            if child_id == job.job_id:
                continue
            with contextlib.suppress(NotFound):
                child = await self.get(child_id)
                if child.first_name or child.last_name:
                    names.append(f"{child.first_name} {child.last_name}".strip())
        return names

    async def watch(self, job_id: str) -> AsyncIterator[jobs_pb2.WatchResponse]:
        """Every snapshot and event of the job so far, then live ones until it ends."""
        job = await self.get(job_id)
        sub = await self.js.subscribe(
            jetstream.job_subject(job_id), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            if job.state in pipeline.TERMINAL:
                # Replay what is stored, then stop: nothing more will come.
                info = await self.js.stream_info(
                    jetstream.JOBS_STREAM, subjects_filter=jetstream.job_subject(job_id)
                )
                remaining = (info.state.subjects or {}).get(jetstream.job_subject(job_id), 0)
                if not remaining:  # archived after its snapshots expired: the final state
                    yield jobs_pb2.WatchResponse(job=job)
                for _ in range(remaining):
                    msg = await sub.next_msg(timeout=5)
                    yield jobs_pb2.WatchResponse.FromString(msg.data)
                return
            while True:
                try:
                    msg = await sub.next_msg(timeout=30)
                except NatsTimeoutError:
                    continue
                update = jobs_pb2.WatchResponse.FromString(msg.data)
                yield update
                if update.job.state in pipeline.TERMINAL:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # ------------------------------------------------------------------ internals

    async def _update(
        self,
        job_id: str,
        mutate: Callable[[jobs_pb2.Job], pipeline.Advance | None],
        shown: Callable[[], jobs_pb2.JobEvent | None] = lambda: None,
        ready: asyncio.Future[None] | None = None,
    ) -> tuple[jobs_pb2.Job, pipeline.Advance]:
        """CAS-update the job, then publish the new tasks and a snapshot for watchers.

        ``mutate`` returns None to leave the entry as it is (nothing is published then).
        ``ready``, when given, is awaited before the entry is written (or kept): what must
        be done before the job may change, overlapped with computing the change.
        """
        result: dict[str, object] = {}

        async def apply(value: bytes | None) -> bytes | None:
            if value is None:
                archived = await self._archived(job_id)
                if archived is None:
                    raise NotFound(f"no job {job_id!r}")
                # Archived jobs are final: ``mutate`` may still refuse (a review), a change is dropped.
                mutate(archived)
                result["job"], result["step"], result["was"] = archived, None, archived.state
                return None
            job = jobs_pb2.Job.FromString(value)
            result["was"] = job.state
            step = mutate(job)
            result["job"], result["step"] = job, step
            if ready is not None:
                await ready
            if step is None:
                return None
            job.updated_at.CopyFrom(pipeline.now())
            return job.SerializeToString()

        value, revision = await jetstream.kv_update(self.jobs, job_id, apply, known=self._entries.get(job_id))
        job: jobs_pb2.Job = result["job"]  # type: ignore[assignment]
        self._remember(job, jetstream.Versioned(value, revision))
        if result["step"] is None:
            return job, pipeline.Advance([], [])
        step: pipeline.Advance = result["step"]  # type: ignore[assignment]
        # The new tasks go out first (the next stage waits on them); the cancel marker and the
        # watchers' snapshot ride along instead of each waiting for the one before.
        publishes: list[Awaitable[object]] = [
            jetstream.publish_task(self.js, task.stage, task.payload, task.task_id) for task in step.new
        ]
        if job.state in (S.JOB_STATE_CANCELLED, S.JOB_STATE_FAILED, S.JOB_STATE_REJECTED):
            # Workers check this before and during tasks: nothing more runs for the job.
            publishes.append(self.cancels.put(job_id, job.error.encode() or b"stopped"))
        if job.state in pipeline.TERMINAL and result["was"] not in pipeline.TERMINAL:
            publishes.append(self.index.finished(job_id, retention.seconds(job.updated_at)))
        publishes.append(
            self._publish_job(job, shown() or jobs_pb2.JobEvent(stage=job.stage, percent=job.percent))
        )
        await asyncio.gather(*publishes)
        return job, step

    async def _publish_job(self, job: jobs_pb2.Job, event: jobs_pb2.JobEvent) -> None:
        if not event.HasField("time"):
            event.time.CopyFrom(pipeline.now())
        update = jobs_pb2.WatchResponse(job=job, event=event)
        await self.js.publish(jetstream.job_subject(job.job_id), update.SerializeToString())

    async def _step(
        self,
        job_id: str,
        event: events_pb2.StageEvent | None,
        republish: bool,
        ready: asyncio.Future[None] | None = None,
    ) -> jobs_pb2.Job:
        """Apply an event (if any) and advance; ``republish`` re-sends every in-flight task.

        ``ready`` is awaited before the job changes (see :meth:`_update`).
        """
        services = await self.services.get()
        shown: list[jobs_pb2.JobEvent | None] = [None]

        def mutate(job: jobs_pb2.Job) -> pipeline.Advance | None:
            before = job.SerializeToString(deterministic=True)
            if event is not None:
                shown[0] = pipeline.apply_event(job, event)
            step = pipeline.advance(job, services)
            if job.SerializeToString(deterministic=True) == before:
                return step if republish else None
            return step

        job, step = await self._update(job_id, mutate, lambda: shown[0], ready)
        if republish:
            await asyncio.gather(
                *(jetstream.publish_task(self.js, t.stage, t.payload, t.task_id) for t in step.inflight)
            )
        return job

    async def _consume(self) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await self._sub.fetch(batch=16, timeout=2)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as exc:  # broker restart: the client reconnects by itself
                log.warning("event fetch failed: %s", exc)
                await asyncio.sleep(1)
                continue
            for msg in msgs:
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        try:
            event = events_pb2.StageEvent.FromString(msg.data)
        except Exception:
            log.error("dropping an undecodable event on %s", msg.subject)
            await msg.term()
            return
        job_id = event.meta.job_id
        self._heard(event, time.time())
        with log_context(job_id=job_id, stage=event.meta.stage, task_id=event.meta.task_id):
            try:
                if event.WhichOneof("outcome") == "progress":
                    # Progress is for watchers only: no state change, no KV write, and no KV
                    # read when this replica has seen the job (the snapshot may then lag a
                    # change made by another replica; the next state change corrects it).
                    job = self._recent.get(job_id) or await self.get(job_id)
                    shown = pipeline.apply_event(job, event)
                    if shown is not None:
                        await self._publish_job(job, shown)
                else:
                    # The manifest is written while the children start and the new state is
                    # computed; the state is written only once the manifest is (claim check).
                    manifest = asyncio.ensure_future(self._write_manifest(event))
                    try:
                        await self._start_children(job_id, event)
                        await self._step(
                            job_id, event, republish=int(msg.metadata.num_delivered or 1) > 1, ready=manifest
                        )
                        await manifest  # done already: the state was written after it
                    except BaseException:
                        _discard(manifest)
                        raise
                await msg.ack_sync()
            except NotFound:
                log.warning("event for unknown job; dropped")
                await msg.term()
            except Exception:
                log.exception("event handling failed; it will be redelivered")
                with contextlib.suppress(Exception):
                    await msg.nak(delay=1)

    async def _write_manifest(self, event: events_pb2.StageEvent) -> None:
        """The result's manifest object, written before the job counts the result (claim check)."""
        record = pipeline.manifest_record(event)
        if record is None:
            return
        key, content = record
        data = json.dumps(content, sort_keys=True).encode()
        await asyncio.to_thread(self.store.put, key, data, "application/json")

    async def _start_children(self, job_id: str, event: events_pb2.StageEvent) -> None:
        """A collection's prompts arrived: start one portrait job per prompt.

        Runs before the collection's own update, with idempotency keys, so a crash in
        between re-submits the same children instead of losing or doubling them.
        """
        if event.WhichOneof("outcome") != "result" or event.result.WhichOneof("payload") != "prompts":
            return
        job = await self.get(job_id)
        if not job.spec.collection_size or job.state in pipeline.TERMINAL:
            return
        for key, spec in pipeline.child_specs(job, event.result.prompts):
            await self.submit(spec, key, parent_id=job_id)

    def _timeout_for(self, stage: int) -> float:
        return self.settings.timeout_for(pipeline.STAGES[stage].task)

    def _heard(self, event: events_pb2.StageEvent, at: float) -> None:
        """Remember that a worker reported on the event's stage at ``at`` (extends its deadline)."""
        d = pipeline.BY_TASK.get(event.meta.stage)
        if d is None or not event.meta.job_id:
            return
        key = (event.meta.job_id, d.stage)
        self._activity[key] = max(at, self._activity.get(key, 0.0))
        self._activity.move_to_end(key)
        while len(self._activity) > RECENT_ACTIVITY:
            self._activity.popitem(last=False)

    def _stage_limit(self, job: jobs_pb2.Job, stage: int) -> float:
        """Seconds after its start that ``stage`` may run: its timeout, moved on by activity."""
        limit = self._timeout_for(stage)
        heard = self._activity.get((job.job_id, stage))
        status = next((s for s in job.stages if s.stage == stage), None)
        if heard is None or status is None:
            return limit
        return limit + max(0.0, heard - status.started_at.ToSeconds())

    async def _heard_lately(self, job_id: str, stage: int, now_s: float) -> bool:
        """Whether the events stream holds an event of ``stage`` within its timeout.

        Each event reaches one coordinator replica, so before failing a stage this replica
        has not heard from, it reads the job's recent events back; what it finds extends
        the deadline like an event it handled.
        """
        limit = self._timeout_for(stage)
        task = pipeline.STAGES[stage].task.value
        name = f"activity-{uuid.uuid4().hex[:16]}"
        config = ConsumerConfig(
            name=name,
            filter_subject=jetstream.event_subject(job_id),
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=datetime.fromtimestamp(now_s - limit, UTC),
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
            mem_storage=True,
        )
        latest = 0.0
        try:
            await self.js.add_consumer(jetstream.EVENTS_STREAM, config)
            sub = await self.js.pull_subscribe_bind(stream=jetstream.EVENTS_STREAM, durable=None, name=name)
            left = int((await sub.consumer_info()).num_pending or 0)
            while left > 0:
                msgs = await sub.fetch(min(left, 256), timeout=10)
                left -= len(msgs)
                for msg in msgs:
                    if events_pb2.StageEvent.FromString(msg.data).meta.stage == task:
                        latest = max(latest, msg.metadata.timestamp.timestamp())
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        except Exception as exc:  # a broker hiccup must not fail the stage: the next sweep asks again
            log.warning("could not read the job's recent events: %s", exc, extra={"job_id": job_id})
            return True
        finally:
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(jetstream.EVENTS_STREAM, name)
        if not latest:
            return False
        key = (job_id, stage)
        self._activity[key] = max(latest, self._activity.get(key, 0.0))
        return now_s - latest <= limit

    async def _sweep(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.coordinator_sweep_interval_s)
            if self._stopping.is_set():
                return
            try:
                await self._sweep_once()
            except Exception:
                log.exception("sweep failed")
            try:
                await self._archive_finished()
            except Exception:
                log.exception("archiving finished jobs failed")

    async def _sweep_once(self) -> None:
        now_s = time.time()
        for job in await self._active_jobs(now_s):
            if (
                job.state == S.JOB_STATE_QUEUED
                and now_s - job.created_at.ToSeconds() > self.settings.coordinator_stall_s
            ):
                log.warning("job stalled in QUEUED; re-publishing its tasks", extra={"job_id": job.job_id})
                await self._step(job.job_id, None, republish=True)
                continue
            if job.state != S.JOB_STATE_RUNNING:
                continue
            late = pipeline.timed_out(job, functools.partial(self._stage_limit, job), now_s)
            if late is None or await self._heard_lately(job.job_id, late[0], now_s):
                continue
            stage, limit = late[0], self._timeout_for(late[0])
            service = pipeline.STAGES[stage].service
            silent = "with no word from its tasks for" if (job.job_id, stage) in self._activity else "after"
            error = f"timed out {silent} {limit:.0f}s (is the {service} service running?)"
            heard = self._activity.get((job.job_id, stage))
            log.warning(
                "stage timed out",
                extra={
                    "job_id": job.job_id,
                    "stage": S.Stage.Name(stage),
                    "silent_s": round(now_s - heard, 3) if heard else None,
                },
            )

            def mutate(j: jobs_pb2.Job, stage: int = stage, error: str = error) -> pipeline.Advance | None:
                if j.state != S.JOB_STATE_RUNNING:
                    return None
                pipeline.fail(j, stage, error)
                return pipeline.Advance([], [])

            await self._update(job.job_id, mutate, _event(stage, error))

    # ------------------------------------------------------------------ index and retention

    async def _active_jobs(self, now_s: float) -> builtins.list[jobs_pb2.Job]:
        """The jobs that are not terminal, read through the active index (never every job).

        Repairs what a crash left: an entry whose job was never created is dropped after the
        stall time, and a terminal job still indexed as active moves to the done entries.
        """
        found = []
        for job_id, submitted in (await self.index.active()).items():
            entry = await jetstream.kv_read(self.jobs, job_id)
            if entry.value is None:
                if now_s - submitted > self.settings.coordinator_stall_s:
                    await self.index.forget(job_id)
                continue
            job = jobs_pb2.Job.FromString(entry.value)
            if job.state in pipeline.TERMINAL:
                await self.index.finished(job_id, retention.seconds(job.updated_at))
                continue
            found.append(job)
        return found

    async def _archive_finished(self) -> None:
        """Archive the jobs finished longer than the retention ago (0: keep them all)."""
        keep_s = self.settings.coordinator_job_retention_s
        now_s = time.time()
        if not keep_s or now_s - self._archive_checked < min(retention.ARCHIVE_EVERY_S, keep_s):
            return
        self._archive_checked = now_s
        # Markers of the entries the last pass purged: every mirror has seen them by now.
        erased, self._purged_index_keys = self._purged_index_keys, []
        await retention.erase(self.js, self.jobs, erased)
        for job_id, finished in (await self.index.done()).items():
            if finished + keep_s <= now_s:
                await self._archive(job_id)

    async def _archive(self, job_id: str) -> None:
        """Write the job's final record to the store, then remove it from the bucket."""
        entry = await jetstream.kv_read(self.jobs, job_id)
        if entry.value is not None:
            job = jobs_pb2.Job.FromString(entry.value)
            if job.state not in pipeline.TERMINAL:  # cannot happen: terminal states are final
                log.error("job indexed as finished is %s; left in place", S.JobState.Name(job.state))
                return
            record = retention.archive_record(job)
            await asyncio.to_thread(self.store.put, retention.archive_key(job_id), record, "application/json")
            try:
                # Only the revision archived: a job changed meanwhile waits for the next pass.
                await self.jobs.delete(job_id, last=entry.revision)
            except Exception as exc:
                log.info("job changed while archiving (%s); next pass", exc, extra={"job_id": job_id})
                return
            # Every revision and the delete marker: a bucket that only marks grows forever.
            await retention.erase(self.js, self.jobs, [job_id])
            log.info("job archived", extra={"job_id": job_id, "key": retention.archive_key(job_id)})
        self._recent.pop(job_id, None)
        self._entries.pop(job_id, None)
        await self.index.forget(job_id)
        self._purged_index_keys += [retention.ACTIVE + job_id, retention.DONE + job_id]

    async def _index_existing_jobs(self) -> None:
        """Index the jobs of a bucket written before the index existed (once per bucket)."""
        indexed = await self.index.index_bucket()
        if indexed:
            log.info("indexed the jobs bucket", extra={"jobs": indexed})


def _event(stage: int, message: str) -> Callable[[], jobs_pb2.JobEvent]:
    event = jobs_pb2.JobEvent(stage=stage, message=message)  # type: ignore[arg-type]
    return lambda: event


def _discard(future: asyncio.Future[None]) -> None:
    """Cancel ``future`` if still running and retrieve its outcome, so no error goes unobserved.

    A store write in a thread runs on regardless; it is idempotent (redelivery rewrites it).
    """
    future.cancel()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())


def job_error_or(default: str, reason: str) -> str:
    return f"{default}: {reason}" if reason else default
