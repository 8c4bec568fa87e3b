"""NATS JetStream topology and idempotent setup: streams, consumers, KV buckets.

Subjects:
  ganfolk.tasks.<stage>     work-queue stream GANFOLK_TASKS (one durable pull consumer per stage)
  ganfolk.events.<job_id>   stream GANFOLK_EVENTS: progress, results and failures of tasks
  ganfolk.dlq.<stage>       stream GANFOLK_DLQ: tasks that were terminated or ran out of deliveries
Job state lives in the KV bucket ``ganfolk_jobs`` (compare-and-set on the revision).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import nats
import tenacity
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from ganfolk.runtime.settings import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)

TASKS_STREAM = "GANFOLK_TASKS"
EVENTS_STREAM = "GANFOLK_EVENTS"
DLQ_STREAM = "GANFOLK_DLQ"
JOBS_STREAM = "GANFOLK_JOBS"
JOBS_BUCKET = "ganfolk_jobs"
# job_id -> reason, written by Cancel; workers check it before (and during) a task.
CANCEL_BUCKET = "ganfolk_cancelled"
# service name -> info_pb2.GetInfoResponse, written by each service when it is ready.
SERVICES_BUCKET = "ganfolk_services"
# Window in which JetStream drops a re-published message id (crash between publish and ack).
DUPLICATE_WINDOW_S = 30 * 60.0


def task_subject(stage: str) -> str:
    return f"ganfolk.tasks.{stage}"


def event_subject(job_id: str) -> str:
    return f"ganfolk.events.{job_id or '_'}"


def job_subject(job_id: str) -> str:
    return f"ganfolk.jobs.{job_id}"


def dlq_subject(stage: str) -> str:
    return f"ganfolk.dlq.{stage}"


def consumer_name(stage: str) -> str:
    return f"stage-{stage}"


def max_deliveries_advisory(stream: str, consumer: str) -> str:
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"


def inbox_prefix(user: str) -> str:
    """Reply subjects of a NATS user: its own, so no other user may read its replies.

    The generated server authorization (:mod:`ganfolk.runtime.nats_auth`) lets each user
    subscribe only under this prefix, so one service cannot read the tasks that JetStream
    delivers to another's fetch inbox.
    """
    return f"_INBOX.{user}"


def connect_options(settings: Settings) -> dict[str, Any]:
    """Credentials and inbox for ``nats.connect`` from the ``GANFOLK_NATS_*`` settings."""
    options: dict[str, Any] = {}
    if settings.nats_creds_file is not None:
        if not settings.nats_creds_file.is_file():
            raise ConfigError(f"GANFOLK_NATS_CREDS_FILE: no file at {settings.nats_creds_file}")
        options["user_credentials"] = str(settings.nats_creds_file)
    if settings.nats_password is not None and not settings.nats_user:
        raise ConfigError("GANFOLK_NATS_PASSWORD is set without GANFOLK_NATS_USER: set both")
    if settings.nats_user:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", settings.nats_user):
            # It is also the user's inbox token (_INBOX.<user>.>), so no dots or wildcards.
            raise ConfigError("GANFOLK_NATS_USER may hold only letters, digits, '_' and '-'")
        if not settings.nats_password:
            raise ConfigError(f"GANFOLK_NATS_USER={settings.nats_user} needs GANFOLK_NATS_PASSWORD")
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password.get_secret_value()
        options["inbox_prefix"] = inbox_prefix(settings.nats_user)
    return options


async def connect(url: str, name: str, settings: Settings | None = None) -> NATS:
    """Connect with unbounded reconnects: a broker restart must not kill a worker.

    Credentials come from ``settings`` (default: the environment): GANFOLK_NATS_USER and
    GANFOLK_NATS_PASSWORD, or GANFOLK_NATS_CREDS_FILE (nkey/JWT); none for an open server.
    """
    options = connect_options(settings if settings is not None else load_settings())

    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        **options,
    )


def topology_retrying() -> tenacity.AsyncRetrying:
    """Retry policy for finding a stream or bucket that another process creates.

    Under the generated NATS authorization only the coordinator may create or change
    streams and buckets; a worker that starts first is refused (the request times out)
    and waits here for the coordinator to create them.
    """
    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_delay(180),
        wait=tenacity.wait_exponential(multiplier=0.5, max=5),
        retry=tenacity.retry_if_exception_type((NatsTimeoutError, TimeoutError)),
        before_sleep=lambda state: log.warning(
            "JetStream topology not ready (%s); waiting for the coordinator to create it",
            state.outcome.exception() if state.outcome else "",
        ),
        reraise=True,
    )


def _stream(name: str, subjects: str, replicas: int, max_age_days: float | None) -> StreamConfig:
    """File-backed stream with message-id de-duplication; no max age means a work queue."""
    return StreamConfig(
        name=name,
        subjects=[subjects],
        retention=RetentionPolicy.WORK_QUEUE if max_age_days is None else RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=None if max_age_days is None else max_age_days * 24 * 3600.0,
        num_replicas=replicas,
    )


def stream_configs(replicas: int = 1) -> list[StreamConfig]:
    return [
        _stream(TASKS_STREAM, "ganfolk.tasks.>", replicas, None),
        _stream(EVENTS_STREAM, "ganfolk.events.>", replicas, 7),
        _stream(JOBS_STREAM, "ganfolk.jobs.>", replicas, 7),
        _stream(DLQ_STREAM, "ganfolk.dlq.>", replicas, 30),
    ]


def _same_config(live: StreamConfig, want: StreamConfig) -> bool:
    """True when an existing stream already has every setting ``want`` manages."""
    if sorted(live.subjects or []) != sorted(want.subjects or []):
        return False
    if (live.retention, live.storage, live.num_replicas) != (want.retention, want.storage, want.num_replicas):
        return False
    return all(
        math.isclose(float(getattr(live, f) or 0), float(getattr(want, f) or 0), rel_tol=1e-6)
        for f in ("duplicate_window", "max_age")
    )


async def ensure_streams(js: JetStreamContext, replicas: int | None = None) -> None:
    """Create the streams, or bring an existing one to this configuration. Safe to repeat.

    ``replicas`` None keeps an existing stream's replica count (new ones get 1). A stream
    that already matches is left alone, so a process allowed only to read stream info (a
    worker under the generated NATS authorization) passes once the coordinator made them.
    """
    for cfg in stream_configs(replicas or 1):
        async for attempt in topology_retrying():
            with attempt:
                await _ensure_stream(js, cfg, keep_replicas=replicas is None)


async def _ensure_stream(js: JetStreamContext, cfg: StreamConfig, keep_replicas: bool) -> None:
    try:
        live = (await js.stream_info(cfg.name)).config  # type: ignore[arg-type]
    except NotFoundError:
        try:
            await js.add_stream(cfg)
            return
        except BadRequestError:  # created concurrently by another replica
            live = (await js.stream_info(cfg.name)).config  # type: ignore[arg-type]
    if keep_replicas:
        cfg = cfg.evolve(num_replicas=live.num_replicas)
    if not _same_config(live, cfg):
        await js.update_stream(cfg)


async def publish_service_info(js: JetStreamContext, service: str, info: bytes) -> None:
    kv = await ensure_kv(js, SERVICES_BUCKET, history=1)
    await kv.put(service, info)


async def is_cancelled(kv: KeyValue, job_id: str) -> bool:
    if not job_id:
        return False
    return (await kv_read(kv, job_id)).value is not None


V = TypeVar("V")


class KvMirror(Generic[V]):
    """A KV bucket mirrored in memory by a watch: key -> ``decode(value)``.

    The watch first replays the bucket (a None entry marks the end of the replay); the mirror
    is built fresh from it, so entries deleted while a watch was down disappear too, and only
    then becomes :attr:`current`. After the watch breaks (e.g. across a broker restart) it is
    not current until a new watch has replayed: callers read the bucket meanwhile.
    ``decode=None`` mirrors keys only (the watch carries no values).
    """

    def __init__(self, kv: KeyValue, decode: Callable[[bytes], V] | None, what: str, keys: str = ">") -> None:
        self.kv = kv
        self._decode = decode
        self._what = what
        # The keys mirrored (a KV wildcard): a bucket may hold more than one kind of entry.
        self._keys = keys
        self._entries: dict[str, V] = {}
        self._current = False
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> bool:
        """True while the in-memory mirror answers without a KV read."""
        return self._current

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._current = False

    async def _run(self) -> None:
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s watch broke (%s); reading the bucket until it is back", self._what, exc)
            self._current = False
            await asyncio.sleep(1)

    async def _watch(self) -> None:
        keys_only = self._decode is None
        watcher = await self.kv.watch(self._keys, meta_only=keys_only)
        try:
            fresh: dict[str, V] = {}
            async for entry in watcher:
                if entry is None:
                    self._entries, self._current = fresh, True
                    continue
                target = self._entries if self._current else fresh
                if entry.operation in (KV_DEL, KV_PURGE) or (not keys_only and not entry.value):
                    target.pop(entry.key, None)
                else:
                    # keys only: the mirror holds None for each key (V is None then)
                    target[entry.key] = self._decode(entry.value) if self._decode else cast(V, None)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()


class CancelledJobs(KvMirror[None]):
    """The cancel bucket's job ids mirrored in memory by a KV watch.

    Workers ask before every task and long handlers before every step (VQGAN: every
    iteration); a KV read each time costs about a millisecond on the task path, a set
    lookup nothing. Until the watch has replayed the bucket (and again after it broke,
    e.g. across a broker restart) :meth:`is_cancelled` reads the bucket directly, so an
    answer never misses a cancel written before the watch was current. Once current, a
    cancel shows up as soon as the server pushes it: to a task that starts meanwhile it
    looks as if the cancel had come a moment later, which a cancel may always do.
    """

    def __init__(self, kv: KeyValue) -> None:
        # Only the keys matter (the values are reasons nobody here reads).
        super().__init__(kv, None, "cancel")

    async def is_cancelled(self, job_id: str) -> bool:
        if not job_id:
            return False
        if self._current:
            return job_id in self._entries
        return await is_cancelled(self.kv, job_id)


async def ensure_kv(js: JetStreamContext, bucket: str = JOBS_BUCKET, history: int = 8) -> KeyValue:
    """The bucket, created when missing (or, where this process may not, once created)."""
    async for attempt in topology_retrying():
        with attempt:
            return await _ensure_kv(js, bucket, history)
    raise AssertionError("unreachable: tenacity reraises")


async def _ensure_kv(js: JetStreamContext, bucket: str, history: int) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except NotFoundError:  # BucketNotFoundError
        pass
    try:
        return await js.create_key_value(
            KeyValueConfig(bucket=bucket, history=history, storage=StorageType.FILE)
        )
    except BadRequestError:
        return await js.key_value(bucket)


@dataclass(frozen=True)
class StagePolicy:
    """Delivery policy of a stage's consumer: set on the consumer, not in model code.

    ``ack_wait`` only bounds how long a *dead* worker holds a task: a live one heartbeats
    (``in_progress()``) every ``heartbeat_interval``, a third of the ack wait unless set, so
    a long task is never redelivered while its worker runs, and a killed worker's task goes
    to another replica about ``ack_wait`` after the last heartbeat.
    """

    # 20 s: with 6.7 s heartbeats a dead worker's task moves on within ~20 s of its last beat,
    # and a task killed twice still resumes within a chaos run's 40 s stall budget.
    ack_wait: float = 20.0
    max_deliver: int = 5
    # Delays for nak() after a transient failure, by attempt (last value repeats).
    retry_delays: tuple[float, ...] = (2.0, 10.0, 30.0, 60.0)
    # In-flight tasks of the stage across all replicas.
    max_ack_pending: int = 16
    # Tasks one process runs at once.
    concurrency: int = 1
    fetch_timeout: float = 2.0
    # Seconds between heartbeats; None: a third of ack_wait (three chances before a redelivery).
    heartbeat: float | None = None

    def __post_init__(self) -> None:
        if self.max_deliver < 1 or self.ack_wait <= 0 or self.concurrency < 1:
            raise ValueError(f"invalid stage policy {self}")

    def retry_delay(self, attempt: int) -> float:
        return self.retry_delays[min(attempt - 1, len(self.retry_delays) - 1)]

    def redelivery_backoff(self) -> list[float]:
        """Redelivery schedule after an ack timeout (the worker died): ack_wait twice, then growing.

        A live worker heartbeats, so each of these means a worker died holding the task: the
        second death is usually bad luck (a node drain, a rollout), the third on the same task a
        sign the task kills its workers, which max_deliver then bounds.
        """
        return [self.ack_wait * (2 ** max(i - 1, 0)) for i in range(max(self.max_deliver - 1, 1))]

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between ``in_progress()`` heartbeats of a running task."""
        return self.heartbeat or max(self.ack_wait / 3.0, 0.2)


async def ensure_consumer(js: JetStreamContext, stage: str, policy: StagePolicy) -> str:
    """Durable pull consumer for a stage, created or updated to ``policy``."""
    name = consumer_name(stage)
    backoff = policy.redelivery_backoff()
    cfg = ConsumerConfig(
        durable_name=name,
        filter_subject=task_subject(stage),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        # With a backoff list the server takes the first value as the ack wait.
        ack_wait=backoff[0],
        backoff=backoff if policy.max_deliver > len(backoff) else None,
        max_deliver=policy.max_deliver,
        max_ack_pending=policy.max_ack_pending,
    )
    try:
        await js.add_consumer(TASKS_STREAM, cfg)
    except BadRequestError as exc:
        # 2.9 rejects some in-place changes; the existing durable still serves.
        log.warning("consumer %s kept as is: %s", name, exc)
    return name


async def publish_task(js: JetStreamContext, stage: str, payload: bytes, task_id: str) -> int:
    """Publish a task; the task id is the de-duplication id, so re-publishing is harmless."""
    ack = await js.publish(task_subject(stage), payload, headers={"Nats-Msg-Id": task_id})
    return int(ack.seq)


T = TypeVar("T")


class CasConflict(RuntimeError):
    """The KV entry changed under us more times than the retry budget allows."""


@dataclass
class Versioned:
    value: bytes | None
    revision: int = 0


async def kv_read(kv: KeyValue, key: str) -> Versioned:
    try:
        entry = await kv.get(key)
    except NotFoundError:  # KeyNotFoundError, KeyDeletedError
        return Versioned(None, 0)
    return Versioned(entry.value, int(entry.revision or 0))


async def kv_values(kv: KeyValue) -> dict[str, bytes]:
    """Every live key of a bucket with its value (empty for an empty bucket)."""
    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    values = {}
    for key in keys:
        entry = await kv_read(kv, key)
        if entry.value is not None:
            values[key] = entry.value
    return values


async def kv_cas(kv: KeyValue, key: str, value: bytes, revision: int) -> int:
    """Write ``value`` only if the entry is still at ``revision`` (0: must not exist).

    Raises ``KeyWrongLastSequenceError`` when someone else wrote first.
    """
    if revision == 0:
        return int(await kv.create(key, value))
    return int(await kv.update(key, value, last=revision))


async def kv_update(
    kv: KeyValue,
    key: str,
    mutate: Callable[[bytes | None], Awaitable[bytes | None] | bytes | None],
    attempts: int = 20,
    known: Versioned | None = None,
) -> tuple[bytes | None, int]:
    """Read-modify-write with compare-and-set, re-reading on conflict.

    ``mutate`` gets the current value (None when absent) and returns the new value, or
    None to leave the entry unchanged. Returns the value written (or kept) and its revision.

    ``known`` is the entry as the caller last wrote or read it: the first attempt mutates
    it without reading, and the compare-and-set proves it current (a stale guess costs
    one refused write, then the entry is read). Only a write is trusted on a guess: when
    ``mutate`` keeps a guessed value, or fails on it, the entry is read and it runs again.
    """
    guess = known if known is not None and known.value is not None else None
    for _ in range(attempts):
        guessed = guess is not None
        current = guess if guess is not None else await kv_read(kv, key)
        guess = None
        try:
            new = mutate(current.value)
            if hasattr(new, "__await__"):
                new = await new  # type: ignore[misc]
        except Exception:
            if guessed:
                continue
            raise
        if new is None:
            if guessed:
                continue
            return current.value, current.revision
        try:
            return new, await kv_cas(kv, key, new, current.revision)  # type: ignore[arg-type]
        except KeyWrongLastSequenceError:
            continue
    raise CasConflict(f"gave up updating {key!r} after {attempts} conflicting writes")
