"""Training progress where people look: NATS events, a run registry in KV, Prometheus.

A run's rank 0 reports through :class:`NatsReporter`:

* every ``tick`` / ``snapshot`` / ``started`` / ``finished`` becomes a
  :class:`~ganfolk.v1.train_pb2.TrainEvent` on ``ganfolk.train.<run>`` in stream
  ``GANFOLK_TRAIN`` (limits retention: bounded by age, bytes and messages per run);
* the run's :class:`~ganfolk.v1.train_pb2.TrainRun` lives in KV bucket
  ``ganfolk_train_runs`` (key = run id), written with compare-and-set. It holds the latest
  tick and the latest snapshot only, so it does not grow with training length.

:class:`PrometheusReporter` mirrors the numbers as gauges for ``/metrics``. The reading side,
used by ``ganfolk train list|status|watch``, is :func:`list_runs`, :func:`get_run` and
:func:`follow`, with the formatters beside them. :func:`make_reporters` is the hook
:func:`services.stylegan.training.report.make_reporter` calls.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import logging
import math
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge

from ganfolk.runtime import jetstream
from ganfolk.runtime.metrics import start_metrics_server
from ganfolk.runtime.settings import ConfigError, load_settings
from ganfolk.runtime.train_topology import (
    MAX_MESSAGE_BYTES,
    RUNS_BUCKET,
    SUBJECT_PREFIX,
    TRAIN_STREAM,
    TrainTopologySettings,
    open_train_topology,
)
from ganfolk.v1 import train_pb2

__all__ = [
    "MAX_MESSAGE_BYTES",
    "RUNS_BUCKET",
    "TRAIN_STREAM",
    "NatsReporter",
    "ProgressSettings",
    "PrometheusReporter",
    "UnknownRun",
    "event_line",
    "follow",
    "get_run",
    "list_runs",
    "make_reporters",
    "nats_answers",
    "run_key",
    "run_table",
    "status_text",
    "train_subject",
]

log = logging.getLogger("ganfolk.train.progress")

MAX_TEXT = 1024
MAX_ERROR = 2000
MAX_MAP_ENTRIES = 64

STATE_NAMES = {
    "running": train_pb2.TRAIN_STATE_RUNNING,
    "succeeded": train_pb2.TRAIN_STATE_SUCCEEDED,
    "failed": train_pb2.TRAIN_STATE_FAILED,
    "cancelled": train_pb2.TRAIN_STATE_CANCELLED,
}
TERMINAL = frozenset(
    {train_pb2.TRAIN_STATE_SUCCEEDED, train_pb2.TRAIN_STATE_FAILED, train_pb2.TRAIN_STATE_CANCELLED}
)
# Tick keys with a field of their own in TrainTick; every other number goes to ``extra``.
_TICK_FIELDS = (
    "sec_per_kimg",
    "sec_per_iter",
    "loss_d",
    "loss_g",
    "r1",
    "path",
    "real_score",
    "fake_score",
    "ada_p",
    "ada_sign",
    "mem_gib",
)


class ProgressSettings(TrainTopologySettings):
    """Where rank 0 reports to (``GANFOLK_TRAIN_*`` plus the shared NATS and metrics settings).

    The bounds of stream ``GANFOLK_TRAIN`` (``GANFOLK_TRAIN_EVENTS_*``) apply where the stream
    is created: by the coordinator or ``ganfolk up``, by a run only on an open server.
    """

    # GANFOLK_TRAIN_REPORT_NATS; None: NATS when GANFOLK_NATS_URL is set or the default answers.
    train_report_nats: bool | None = None


class UnknownRun(LookupError):
    """No run with this id in the registry."""


# --------------------------------------------------------------------------- naming


def run_key(run_id: str) -> str:
    """The run's KV key and subject token: letters, digits, ``-``, ``_`` and ``=`` only.

    Other characters (dots would split the subject, ``*``/``>`` are wildcards) become ``-``,
    the same way for the writer and for ``ganfolk train status``.
    """
    key = "".join(c if c.isascii() and (c.isalnum() or c in "-_=") else "-" for c in run_id.strip())
    if not key.strip("-"):
        raise ValueError(f"run id {run_id!r} has no usable characters")
    return key


def train_subject(run_id: str) -> str:
    """Subject of a run's events (``*`` for every run)."""
    return f"{SUBJECT_PREFIX}.{run_id if run_id == '*' else run_key(run_id)}"


# --------------------------------------------------------------------------- messages


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def _clip(text: Any, limit: int = MAX_TEXT) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)  # numpy and torch scalars
    except (TypeError, ValueError):
        return None


def config_summary(config: Mapping[str, Any]) -> train_pb2.TrainConfigSummary:
    """The run's configuration as a bounded summary: the known keys typed, other scalars as text."""
    summary = train_pb2.TrainConfigSummary()
    typed = {
        "size": "size",
        "batch": "batch",
        "kimg": "total_kimg",
        "total_kimg": "total_kimg",
        "iterations": "iterations",
        "total_iterations": "iterations",
        "aug": "aug",
        "gamma": "gamma",
        "world_size": "world_size",
        "start_iter": "start_iter",
        "dataset": "dataset",
        "data": "dataset",
        "output": "output",
        "out": "output",
    }
    for key, value in config.items():
        field = typed.get(key)
        if field is None:
            if (
                value is None
                or isinstance(value, dict | list | tuple)
                or len(summary.other) >= MAX_MAP_ENTRIES
            ):
                continue
            summary.other[_clip(key, 64)] = _clip(value, 200)
            continue
        if value is None:
            continue
        if field in ("aug", "dataset", "output"):
            setattr(summary, field, _clip(value))
        elif field in ("total_kimg", "gamma"):
            setattr(summary, field, float(value))
        else:
            setattr(summary, field, max(0, int(value)))
    return summary


def tick_message(stats: Mapping[str, Any]) -> train_pb2.TrainTick:
    """A tick's statistics; unknown numeric keys (augment statistics) go to ``extra``, capped."""
    tick = train_pb2.TrainTick(
        iteration=max(0, int(_number(stats.get("iteration")) or 0)),
        kimg=_number(stats.get("kimg")) or 0.0,
        total_kimg=_number(stats.get("total_kimg")) or 0.0,
    )
    for key, value in stats.items():
        number = _number(value)
        if number is None or key in ("iteration", "kimg", "total_kimg"):
            continue
        if key in _TICK_FIELDS:
            setattr(tick, key, number)
        elif len(tick.extra) < MAX_MAP_ENTRIES:
            tick.extra[_clip(key, 64)] = number
    return tick


def snapshot_message(
    iteration: int, checkpoint_uri: str, sha256: str, grid_uri: str, metrics: Mapping[str, Any], kimg: float
) -> train_pb2.TrainSnapshot:
    """A stored checkpoint, by reference (URI + sha256), with its metrics."""
    snap = train_pb2.TrainSnapshot(
        iteration=max(0, int(iteration)),
        checkpoint_uri=_clip(checkpoint_uri),
        checkpoint_sha256=_clip(sha256, 128),
        grid_uri=_clip(grid_uri or ""),
        kimg=kimg,
    )
    for key, value in metrics.items():
        number = _number(value)
        if number is not None and len(snap.metrics) < MAX_MAP_ENTRIES:
            snap.metrics[_clip(key, 64)] = number
    return snap


def state_value(state: str) -> train_pb2.TrainState:
    """``succeeded``/``failed``/``cancelled``/``running`` as the enum (unknown: failed)."""
    return STATE_NAMES.get(state.strip().lower(), train_pb2.TRAIN_STATE_FAILED)


def state_name(state: int) -> str:
    """The enum as the word the loop and the CLI use."""
    return train_pb2.TrainState.Name(state).removeprefix("TRAIN_STATE_").lower()  # type: ignore[arg-type]


# --------------------------------------------------------------------------- NATS reporter


@dataclass
class _Pending:
    subject: str
    payload: bytes


class NatsReporter:
    """Reports a run to NATS from a background thread; training never waits on the broker.

    The reporter's methods only update an in-memory :class:`~ganfolk.v1.train_pb2.TrainRun`,
    queue an event and wake a daemon thread that runs its own asyncio loop and NATS client.
    That thread publishes the events and writes the run entry with compare-and-set. When NATS
    is down or slow nothing blocks and nothing is raised into the training loop: events that
    cannot be published (or exceed the ``queue_size`` backlog) are logged and dropped, the run
    entry is retried until it lands (it is one value, so it cannot pile up), and the client
    reconnects on its own. Only :meth:`finished` waits, at most ``close_timeout`` seconds, so
    the final state has a chance to reach NATS before the process exits.
    """

    def __init__(
        self,
        url: str,
        settings: ProgressSettings | None = None,
        *,
        host: str | None = None,
        queue_size: int = 256,
        publish_timeout: float = 5.0,
        close_timeout: float = 10.0,
        retry_s: float = 2.0,
    ) -> None:
        self.url = url
        self.settings = settings or load_settings(ProgressSettings)
        self.host = host or socket.gethostname()
        self.publish_timeout = publish_timeout
        self.close_timeout = close_timeout
        self.retry_s = retry_s
        self.run_id = ""
        self.key = ""
        self.dropped = 0
        self._lock = threading.Lock()
        self._events: collections.deque[_Pending] = collections.deque(maxlen=queue_size)
        self._record = train_pb2.TrainRun()
        self._dirty = False
        # What this session inherits from an earlier one of the same run (set on first write).
        self._base: train_pb2.TrainRun | None = None
        self._session_snapshots = 0
        self._written = threading.Event()
        self._closing = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        atexit.register(self.close)

    # ----------------------------------------------------------- Reporter protocol

    def started(self, run_id: str, config: dict[str, Any]) -> None:
        """Open the run entry (state running) and publish a ``started`` event."""
        self.run_id = run_id
        self.key = run_key(run_id)
        summary = config_summary(config)
        now = _now()
        with self._lock:
            self._record = train_pb2.TrainRun(
                run_id=_clip(run_id, 256),
                state=train_pb2.TRAIN_STATE_RUNNING,
                config=summary,
                host=_clip(self.host, 256),
                started_at=now,
                updated_at=now,
                starts=1,
            )
            self._base = None
            self._session_snapshots = 0
        self._emit(train_pb2.TrainEvent(started=train_pb2.TrainStarted(config=summary, host=self.host)))
        self._start_thread()

    def tick(self, stats: dict[str, float]) -> None:
        """Publish the tick and make it the entry's ``last_tick``."""
        if not self.key:
            return
        tick = tick_message(stats)
        with self._lock:
            self._record.last_tick.CopyFrom(tick)
            self._record.updated_at.CopyFrom(_now())
        self._emit(train_pb2.TrainEvent(tick=tick))

    def snapshot(
        self, iteration: int, checkpoint_uri: str, sha256: str, grid_uri: str, metrics: dict[str, float]
    ) -> None:
        """Publish the snapshot and make it the entry's latest checkpoint."""
        if not self.key:
            return
        with self._lock:
            snap = snapshot_message(
                iteration, checkpoint_uri, sha256, grid_uri, metrics, self._record.last_tick.kimg
            )
            self._record.last_snapshot.CopyFrom(snap)
            self._record.updated_at.CopyFrom(_now())
            self._session_snapshots += 1
        self._emit(train_pb2.TrainEvent(snapshot=snap))

    def finished(self, state: str, error: str = "") -> None:
        """Record the outcome, then wait (bounded) for it to reach NATS and stop the thread."""
        if not self.key:
            return
        value = state_value(state)
        with self._lock:
            now = _now()
            self._record.state = value
            self._record.error = _clip(error, MAX_ERROR)
            self._record.updated_at.CopyFrom(now)
            self._record.finished_at.CopyFrom(now)
        self._emit(
            train_pb2.TrainEvent(finished=train_pb2.TrainFinished(state=value, error=_clip(error, MAX_ERROR)))
        )
        self.close()

    # ----------------------------------------------------------- lifecycle

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event went out and the entry is written; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = not self._events and not self._dirty
            if idle and self._written.is_set():
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        """Flush for at most ``close_timeout`` seconds, then stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._thread is None:
            return
        if not self.flush(self.close_timeout):
            log.warning(
                "train run %s: NATS did not take the last updates within %.0f s",
                self.run_id,
                self.close_timeout,
            )
        self._closing = True
        self._poke()
        self._thread.join(timeout=5.0)

    # ----------------------------------------------------------- internals

    def _emit(self, event: train_pb2.TrainEvent) -> None:
        event.run_id = self.run_id
        event.time.CopyFrom(_now())
        with self._lock:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1  # the deque drops the oldest; the entry still has the latest
            self._events.append(_Pending(train_subject(self.key), event.SerializeToString()))
            self._dirty = True
            self._written.clear()
        self._poke()

    def _poke(self) -> None:
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None:
            return
        try:
            loop.call_soon_threadsafe(wakeup.set)
        except RuntimeError:  # the loop is gone (closing)
            pass

    def _start_thread(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="ganfolk-train-nats", daemon=True
        )
        self._thread.start()
        ready.wait(timeout=5.0)
        self._poke()

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
        except Exception:  # a reporter must never take training down with it
            log.exception("train progress thread stopped")
        finally:
            self._loop = None
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._wakeup = asyncio.Event()
        ready.set()
        nc = await self._connect()
        if nc is None:
            return
        try:
            await self._serve(nc.jetstream())
        finally:
            try:
                await asyncio.wait_for(nc.close(), timeout=2.0)
            except Exception as exc:  # closing a dead connection is allowed to fail
                log.debug("nats close: %s", exc)

    async def _connect(self) -> NATS | None:
        """Connect, retrying quietly until it works or the reporter closes."""
        reported = False

        async def on_error(exc: Exception) -> None:
            nonlocal reported
            if not reported:
                log.warning(
                    "train progress: NATS %s unavailable (%s); retrying in the background", self.url, exc
                )
                reported = True

        async def on_disconnect() -> None:
            if self._closing:
                return
            log.warning("train progress: NATS disconnected; events are dropped until it is back")

        async def on_reconnect() -> None:
            log.info("train progress: NATS reconnected")

        try:
            # GANFOLK_NATS_USER/PASSWORD (the `train` user) or GANFOLK_NATS_CREDS_FILE.
            login = jetstream.connect_options(self.settings)
        except ConfigError as exc:  # a reporter must never take training down with it
            log.error("train progress: not reporting to NATS: %s", exc)
            return None
        connecting = asyncio.ensure_future(
            nats.connect(
                self.url,
                name=f"ganfolk-train-{self.key}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=2,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                **login,
            )
        )
        assert self._wakeup is not None
        while not connecting.done():
            await asyncio.wait({connecting}, timeout=0.5)
            if self._closing:
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connecting
                return None
        return connecting.result()

    async def _serve(self, js: JetStreamContext) -> None:
        assert self._wakeup is not None
        kv: KeyValue | None = None
        delay = 0.0
        last_problem = ""
        while True:
            if delay:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
                except TimeoutError:
                    pass
            else:
                await self._wakeup.wait()
            self._wakeup.clear()
            if self._closing:
                return
            try:
                if kv is None:
                    kv = await open_train_topology(js, self.settings)
                await self._publish_events(js)
                await self._write_record(kv)
                delay = 0.0
                last_problem = ""
            except Exception as exc:  # NATS trouble: keep the entry dirty and try again
                # The same trouble again (a stream nobody created yet) is said once.
                problem = str(exc)
                level = logging.DEBUG if problem == last_problem else logging.WARNING
                last_problem = problem
                log.log(
                    level, "train progress: NATS update failed (%s); retrying in %.0f s", exc, self.retry_s
                )
                delay = self.retry_s
                self._wakeup.set()

    async def _publish_events(self, js: JetStreamContext) -> None:
        while True:
            with self._lock:
                if not self._events:
                    return
                item = self._events.popleft()
            try:
                await js.publish(
                    item.subject, item.payload, timeout=self.publish_timeout, stream=TRAIN_STREAM
                )
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                # Events are a live feed: a lost one is replaced by the next; the entry keeps the latest.
                self.dropped += 1
                log.warning("train progress: dropped an event of run %s (%s)", self.run_id, exc)
                raise

    async def _write_record(self, kv: KeyValue) -> None:
        with self._lock:
            if not self._dirty:
                return
            mine = train_pb2.TrainRun()
            mine.CopyFrom(self._record)
            session_snapshots = self._session_snapshots
            self._dirty = False
        base_seen: list[train_pb2.TrainRun | None] = [self._base]

        def merge(current: bytes | None) -> bytes:
            base = base_seen[0]
            if base is None:
                # First write of this session: inherit the earlier sessions of a resumed run.
                base = train_pb2.TrainRun()
                if current is not None:
                    stored = train_pb2.TrainRun.FromString(current)
                    base.started_at.CopyFrom(stored.started_at)
                    base.starts = stored.starts
                    base.snapshots = stored.snapshots
                    if stored.HasField("last_snapshot"):
                        base.last_snapshot.CopyFrom(stored.last_snapshot)
                base_seen[0] = base
            new = train_pb2.TrainRun()
            new.CopyFrom(mine)
            if base.HasField("started_at"):
                new.started_at.CopyFrom(base.started_at)
            new.starts = base.starts + 1
            new.snapshots = base.snapshots + session_snapshots
            if not new.HasField("last_snapshot") and base.HasField("last_snapshot"):
                new.last_snapshot.CopyFrom(base.last_snapshot)
            return new.SerializeToString()

        try:
            await jetstream.kv_update(kv, self.key, merge)
        except BaseException:
            with self._lock:
                self._dirty = True
            raise
        self._base = base_seen[0]
        with self._lock:
            if not self._dirty and not self._events:
                self._written.set()


# --------------------------------------------------------------------------- Prometheus

TRAIN_KIMG = Gauge("ganfolk_train_kimg", "Thousands of real images shown so far", ["run"])
TRAIN_TOTAL_KIMG = Gauge("ganfolk_train_total_kimg", "Training length in kimg", ["run"])
TRAIN_ITERATION = Gauge("ganfolk_train_iteration", "Current iteration", ["run"])
TRAIN_SEC_PER_KIMG = Gauge("ganfolk_train_sec_per_kimg", "Seconds per kimg over the last tick", ["run"])
TRAIN_LOSS = Gauge("ganfolk_train_loss", "Losses and regularisers over the last tick", ["run", "loss"])
TRAIN_ADA_P = Gauge("ganfolk_train_ada_p", "ADA augmentation probability", ["run"])
TRAIN_MEM = Gauge("ganfolk_train_memory_gib", "Peak accelerator memory of rank 0, GiB", ["run"])
TRAIN_METRIC = Gauge(
    "ganfolk_train_metric", "Quality metrics of the latest snapshot (swd, fid, kid)", ["run", "metric"]
)
TRAIN_SNAPSHOTS = Counter("ganfolk_train_snapshots", "Checkpoints stored", ["run"])
TRAIN_RUNNING = Gauge("ganfolk_train_running", "1 while the run trains", ["run"])
_LOSSES = {"loss_d": "d", "loss_g": "g", "r1": "r1", "path": "path"}


class PrometheusReporter:
    """The run's numbers as Prometheus gauges (label ``run``), served by ``/metrics``."""

    def __init__(self) -> None:
        self.run_id = ""

    def started(self, run_id: str, config: dict[str, Any]) -> None:
        """Mark the run as running and set its length."""
        self.run_id = run_id
        TRAIN_RUNNING.labels(run_id).set(1)
        kimg = _number(config.get("kimg", config.get("total_kimg")))
        if kimg is not None:
            TRAIN_TOTAL_KIMG.labels(run_id).set(kimg)

    def tick(self, stats: dict[str, float]) -> None:
        """Set kimg, speed, losses, ADA p and memory from the tick."""
        run = self.run_id
        for gauge, key in (
            (TRAIN_KIMG, "kimg"),
            (TRAIN_TOTAL_KIMG, "total_kimg"),
            (TRAIN_ITERATION, "iteration"),
            (TRAIN_SEC_PER_KIMG, "sec_per_kimg"),
            (TRAIN_ADA_P, "ada_p"),
            (TRAIN_MEM, "mem_gib"),
        ):
            value = _number(stats.get(key))
            if value is not None and math.isfinite(value):
                gauge.labels(run).set(value)
        for key, loss in _LOSSES.items():
            value = _number(stats.get(key))
            if value is not None and math.isfinite(value):
                TRAIN_LOSS.labels(run, loss).set(value)

    def snapshot(
        self, iteration: int, checkpoint_uri: str, sha256: str, grid_uri: str, metrics: dict[str, float]
    ) -> None:
        """Count the snapshot and set its metrics."""
        TRAIN_SNAPSHOTS.labels(self.run_id).inc()
        for name, value in metrics.items():
            number = _number(value)
            if number is not None:
                TRAIN_METRIC.labels(self.run_id, name).set(number)

    def finished(self, state: str, error: str = "") -> None:
        """The run no longer trains."""
        TRAIN_RUNNING.labels(self.run_id).set(0)


# --------------------------------------------------------------------------- the hook

_metrics_port: int | None = None


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def nats_answers(url: str, timeout: float = 0.3) -> bool:
    """Whether something accepts TCP connections at the (first) address of a NATS URL."""
    parsed = urllib.parse.urlsplit(url.split(",")[0])
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=timeout):
            return True
    except OSError:
        return False


def make_reporters(config: Any = None) -> list[Any]:
    """The registry-side reporters of a run (called by ``report.make_reporter`` on rank 0).

    * :class:`PrometheusReporter` when ``GANFOLK_METRICS_PORT`` is set (the ``/metrics``
      server starts here, once per process);
    * :class:`NatsReporter` when ``GANFOLK_TRAIN_REPORT_NATS`` is true, or unset and either
      ``GANFOLK_NATS_URL`` is set or the default NATS address answers. A configured but
      unreachable NATS is still used: the reporter retries in the background. It logs in with
      ``GANFOLK_NATS_USER``/``GANFOLK_NATS_PASSWORD`` (the ``train`` user) or
      ``GANFOLK_NATS_CREDS_FILE``; with none set, on the NATS of ``ganfolk up``, as that
      stack's ``train`` user (:func:`ganfolk.local.nats_login`).

    Other ranks get none: one run is one registry entry and one metrics port per node.
    """
    global _metrics_port
    if _rank() != 0:
        return []
    settings = load_settings(ProgressSettings)
    reporters: list[Any] = []
    if settings.metrics_port is not None:
        if _metrics_port is None:
            try:
                _metrics_port = start_metrics_server(settings.metrics_port)
            except OSError as exc:
                log.warning(
                    "train metrics: port %s unavailable (%s); no /metrics", settings.metrics_port, exc
                )
        if _metrics_port is not None:
            reporters.append(PrometheusReporter())
    use_nats = settings.train_report_nats
    if use_nats is None:
        use_nats = "GANFOLK_NATS_URL" in os.environ or nats_answers(settings.nats_url)
    if use_nats:
        from ganfolk import local

        # No credentials set and the NATS of `ganfolk up`: its `train` login from the state dir.
        settings = local.nats_login(settings, "train")
        reporters.append(NatsReporter(settings.nats_url, settings))
    return reporters


# --------------------------------------------------------------------------- reading side


async def _runs_bucket(js: JetStreamContext) -> KeyValue | None:
    try:
        return await js.key_value(RUNS_BUCKET)
    except NotFoundError:  # no run has reported yet
        return None


async def list_runs(js: JetStreamContext) -> list[train_pb2.TrainRun]:
    """Every run in the registry, most recently updated first."""
    kv = await _runs_bucket(js)
    if kv is None:
        return []
    runs = [train_pb2.TrainRun.FromString(v) for v in (await jetstream.kv_values(kv)).values()]
    return sorted(runs, key=lambda r: r.updated_at.ToNanoseconds(), reverse=True)


async def get_run(js: JetStreamContext, run_id: str) -> train_pb2.TrainRun:
    """One run's entry; :class:`UnknownRun` (naming the known runs) when there is none."""
    kv = await _runs_bucket(js)
    entry = await jetstream.kv_read(kv, run_key(run_id)) if kv is not None else None
    if entry is None or entry.value is None:
        known = [r.run_id for r in await list_runs(js)] if kv is not None else []
        hint = f"; known runs: {', '.join(known[:10])}" if known else "; no run has reported to this NATS yet"
        raise UnknownRun(f"no training run {run_id!r} in {RUNS_BUCKET}{hint}")
    return train_pb2.TrainRun.FromString(entry.value)


async def follow(
    js: JetStreamContext, run_id: str, *, poll_s: float = 5.0, replay: bool = True
) -> AsyncIterator[train_pb2.TrainEvent]:
    """A run's events: the latest one first (``replay``), then each new one, until it finishes.

    Ends after a ``finished`` event, or when the registry says the run has ended (its last
    event may have aged out of the stream or been dropped while NATS was down).
    """
    run = await get_run(js, run_id)
    if run.state in TERMINAL:
        return
    policy = DeliverPolicy.LAST_PER_SUBJECT if replay else DeliverPolicy.NEW
    sub = await js.subscribe(
        train_subject(run_id), ordered_consumer=True, deliver_policy=policy, stream=TRAIN_STREAM
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=poll_s)
            except NatsTimeoutError:
                if (await get_run(js, run_id)).state in TERMINAL:
                    return
                continue
            event = train_pb2.TrainEvent.FromString(msg.data)
            yield event
            if event.WhichOneof("kind") == "finished":
                return
    finally:
        await sub.unsubscribe()


# --------------------------------------------------------------------------- formatting


def _ago(ts: Timestamp, now: float) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    secs = max(0.0, now - ts.ToNanoseconds() / 1e9)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs / size:.0f}{unit} ago"
    return f"{secs:.0f}s ago"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _opt(tick: train_pb2.TrainTick, field: str) -> float | None:
    return getattr(tick, field) if tick.HasField(field) else None  # type: ignore[arg-type]


def run_table(runs: Iterable[train_pb2.TrainRun], now: float | None = None) -> str:
    """``ganfolk train list``: run, state, kimg, sec/kimg, ada p, SWD, last checkpoint, updated."""
    now = time.time() if now is None else now
    header = ("RUN", "STATE", "KIMG", "SEC/KIMG", "ADA P", "SWD", "LAST CHECKPOINT", "UPDATED")
    rows = [header]
    for run in runs:
        tick, snap = run.last_tick, run.last_snapshot
        kimg = f"{tick.kimg:.1f}/{tick.total_kimg:g}" if tick.total_kimg else _fmt(tick.kimg, ".1f")
        rows.append(
            (
                run.run_id,
                state_name(run.state),
                kimg,
                _fmt(_opt(tick, "sec_per_kimg"), ".1f"),
                _fmt(_opt(tick, "ada_p"), ".3f"),
                _fmt(snap.metrics["swd"] if "swd" in snap.metrics else None, ".4g"),
                snap.checkpoint_uri or "-",
                _ago(run.updated_at, now),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _when(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return datetime.fromtimestamp(ts.ToNanoseconds() / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def status_text(run: train_pb2.TrainRun, now: float | None = None) -> str:
    """``ganfolk train status``: one run in detail, ending with the sampler's settings."""
    now = time.time() if now is None else now
    cfg, tick, snap = run.config, run.last_tick, run.last_snapshot
    lines = [
        f"run         {run.run_id}",
        f"state       {state_name(run.state)}" + (f": {run.error}" if run.error else ""),
        f"host        {run.host or '-'}   starts {run.starts}",
        f"started     {_when(run.started_at)}",
        f"updated     {_when(run.updated_at)} ({_ago(run.updated_at, now)})",
    ]
    if run.HasField("finished_at"):
        lines.append(f"finished    {_when(run.finished_at)}")
    settings = [
        f"size {cfg.size}" if cfg.size else "",
        f"batch {cfg.batch}" if cfg.batch else "",
        f"kimg {cfg.total_kimg:g}" if cfg.total_kimg else "",
        f"iterations {cfg.iterations}" if cfg.iterations else "",
        f"aug {cfg.aug}" if cfg.aug else "",
        f"gamma {cfg.gamma:g}" if cfg.gamma else "",
        f"world size {cfg.world_size}" if cfg.world_size else "",
        f"from iteration {cfg.start_iter}" if cfg.start_iter else "",
    ]
    lines.append("config      " + " ".join(s for s in settings if s))
    if cfg.dataset:
        lines.append(f"dataset     {cfg.dataset}")
    if cfg.output:
        lines.append(f"output      {cfg.output}")
    if run.HasField("last_tick"):
        lines.append(f"progress    {event_line(train_pb2.TrainEvent(tick=tick))}")
        if tick.extra:
            lines.append("augment     " + " ".join(f"{k}={v:.3g}" for k, v in sorted(tick.extra.items())))
    if run.HasField("last_snapshot"):
        metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(snap.metrics.items()))
        lines += [
            f"checkpoint  {snap.checkpoint_uri} (iteration {snap.iteration}, {run.snapshots} stored)",
            f"sha256      {snap.checkpoint_sha256}",
            f"grid        {snap.grid_uri or '-'}",
            f"metrics     {metrics or '-'}",
            "",
            "# point the stylegan service at this run's latest generator (its g_ema):",
            f"GANFOLK_STYLEGAN_CHECKPOINT={snap.checkpoint_uri}",
            f"GANFOLK_STYLEGAN_CHECKPOINT_SHA256={snap.checkpoint_sha256}",
        ]
    else:
        lines.append("checkpoint  - (no snapshot yet)")
    return "\n".join(lines)


def event_line(event: train_pb2.TrainEvent) -> str:
    """One event as one line for ``ganfolk train watch``."""
    kind = event.WhichOneof("kind")
    if kind == "tick":
        t = event.tick
        total = f"/{t.total_kimg:g}" if t.total_kimg else ""
        parts = [
            f"kimg {t.kimg:.2f}{total}",
            f"it {t.iteration}",
            f"d {_fmt(_opt(t, 'loss_d'), '.3f')}",
            f"g {_fmt(_opt(t, 'loss_g'), '.3f')}",
            f"r1 {_fmt(_opt(t, 'r1'), '.3f')}",
            f"path {_fmt(_opt(t, 'path'), '.3f')}",
            f"p {_fmt(_opt(t, 'ada_p'), '.3f')}",
            f"{_fmt(_opt(t, 'sec_per_kimg'), '.1f')} s/kimg",
        ]
        if t.HasField("mem_gib"):
            parts.append(f"{t.mem_gib:.1f} GiB")
        return " ".join(parts)
    if kind == "snapshot":
        s = event.snapshot
        metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(s.metrics.items()))
        where = f"{s.checkpoint_uri} sha256 {s.checkpoint_sha256[:12]}"
        return f"snapshot {s.iteration:06d} {where} {metrics}".rstrip()
    if kind == "started":
        c = event.started.config
        brief = f"size {c.size} batch {c.batch} kimg {c.total_kimg:g} aug {c.aug or '-'}"
        return f"started on {event.started.host or '?'}: {brief}"
    if kind == "finished":
        f = event.finished
        return f"finished: {state_name(f.state)}" + (f" ({f.error})" if f.error else "")
    return "(empty event)"
