"""The training registry's JetStream topology: stream ``GANFOLK_TRAIN`` and KV ``ganfolk_train_runs``.

Like the job topology it belongs to the privileged side. The coordinator creates it, or brings
it to the configured bounds, when it starts (:func:`ensure_train_topology`), and so does
``ganfolk up`` before it starts anything. A training run only opens it
(:func:`open_train_topology`): under the generated NATS authorization its ``train`` user may
publish ``ganfolk.train.>``, read and write the bucket's entries and read stream info, but never
create or update a stream (an update could republish its events onto ``ganfolk.tasks.mint``).
On an open server (no authorization) a run still creates a missing stream and bucket itself,
and an existing one is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from ganfolk.runtime.settings import Settings

TRAIN_STREAM = "GANFOLK_TRAIN"
RUNS_BUCKET = "ganfolk_train_runs"
SUBJECT_PREFIX = "ganfolk.train"
# One event or one run entry: a tick is ~200 bytes; the reporter's caps keep both far under this.
MAX_MESSAGE_BYTES = 64 * 1024


class TrainTopologySettings(Settings):
    """Bounds of stream ``GANFOLK_TRAIN``, all runs together, oldest events first.

    ``GANFOLK_TRAIN_EVENTS_MAX_AGE_DAYS``, ``GANFOLK_TRAIN_EVENTS_MAX_MB`` and
    ``GANFOLK_TRAIN_EVENTS_PER_RUN``: read where the stream is owned (the coordinator, ``ganfolk
    up``), and by a run that creates it on an open server.
    """

    train_events_max_age_days: float = 30.0
    train_events_max_mb: int = 256
    train_events_per_run: int = 20_000


class TrainTopologyMissing(RuntimeError):
    """The stream or bucket does not exist and this NATS user may not create it."""


def train_stream_config(settings: TrainTopologySettings) -> StreamConfig:
    """Stream ``GANFOLK_TRAIN``: limits retention, so it stays bounded however long runs train."""
    return StreamConfig(
        name=TRAIN_STREAM,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.train_events_max_age_days * 24 * 3600.0,
        max_bytes=settings.train_events_max_mb * 1024 * 1024,
        max_msgs_per_subject=settings.train_events_per_run,
        max_msg_size=MAX_MESSAGE_BYTES,
        num_replicas=settings.stream_replicas,
        duplicate_window=120.0,
    )


def runs_bucket_config(settings: TrainTopologySettings) -> KeyValueConfig:
    """Bucket ``ganfolk_train_runs``: one entry per run (its latest state), no history."""
    return KeyValueConfig(
        bucket=RUNS_BUCKET,
        history=1,
        max_value_size=MAX_MESSAGE_BYTES,
        storage=StorageType.FILE,
        replicas=settings.stream_replicas,
    )


def _same_stream(live: StreamConfig, want: StreamConfig) -> bool:
    if sorted(live.subjects or []) != sorted(want.subjects or []) or live.republish is not None:
        return False
    exact = ("retention", "storage", "discard", "max_bytes", "max_msgs_per_subject", "max_msg_size")
    if any(getattr(live, f) != getattr(want, f) for f in exact) or live.num_replicas != want.num_replicas:
        return False
    return all(
        math.isclose(float(getattr(live, f) or 0), float(getattr(want, f) or 0), rel_tol=1e-6)
        for f in ("max_age", "duplicate_window")
    )


async def ensure_train_topology(js: JetStreamContext, settings: TrainTopologySettings) -> KeyValue:
    """Create the stream and bucket, or bring the stream to ``settings``; idempotent (owner side)."""
    cfg = train_stream_config(settings)
    try:
        live = (await js.stream_info(TRAIN_STREAM)).config
    except NotFoundError:
        try:
            await js.add_stream(cfg)
        except BadRequestError:  # created concurrently
            live = (await js.stream_info(TRAIN_STREAM)).config
            if not _same_stream(live, cfg):
                await js.update_stream(cfg)
    else:
        if not _same_stream(live, cfg):
            await js.update_stream(cfg)
    try:
        return await js.key_value(RUNS_BUCKET)
    except NotFoundError:
        pass
    try:
        return await js.create_key_value(runs_bucket_config(settings))
    except BadRequestError:
        return await js.key_value(RUNS_BUCKET)


async def open_train_topology(js: JetStreamContext, settings: TrainTopologySettings) -> KeyValue:
    """The bucket, for a training run: an existing stream is never changed (run side).

    Missing pieces are created when this user may (an open server); otherwise
    :class:`TrainTopologyMissing` says who creates them.
    """
    try:
        await js.stream_info(TRAIN_STREAM)
    except NotFoundError:
        await _create(js.add_stream(train_stream_config(settings)), f"stream {TRAIN_STREAM}")
    try:
        return await js.key_value(RUNS_BUCKET)
    except NotFoundError:
        pass
    await _create(js.create_key_value(runs_bucket_config(settings)), f"bucket {RUNS_BUCKET}")
    return await js.key_value(RUNS_BUCKET)


async def _create(creating: Awaitable[Any], what: str) -> None:
    try:
        await creating
    except BadRequestError:  # created concurrently
        return
    except Exception as exc:  # refused: the server drops the request, so it times out
        raise TrainTopologyMissing(
            f"{what} does not exist and this NATS user may not create it ({type(exc).__name__}); "
            "the coordinator creates it when it starts (or `ganfolk up`)"
        ) from exc
