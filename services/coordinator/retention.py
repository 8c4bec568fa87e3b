"""Which jobs the coordinator still has to look after, and the archive of finished ones.

The jobs bucket holds one entry per job. Without an index the sweep had to read every job
ever submitted on every pass, and the bucket only grew. Two kinds of index entries live in
the same bucket (the coordinator owns it; no other bucket or permission is needed):

* ``index.active.<job_id>`` -> when the job was submitted: written *before* the job is
  created and removed once it is terminal. The sweep reads only these jobs.
* ``index.done.<job_id>`` -> when the job finished (its last ``updated_at``): written
  after the terminal state, removed once the job is archived.

After the retention a finished job is archived: its final record is written to the object
store as ``jobs/<job_id>/job.json`` (protobuf JSON, beside the job's outputs), then every
revision of its KV entry is purged. ``Get`` falls back to the archive, so a finished job
stays findable by id; ``List`` shows what the bucket holds: the active jobs and those
finished within the retention.

Every step is idempotent and ordered so that a crash anywhere leaves something the next
sweep repairs: an active entry without a job (submit died) is dropped after the stall
time; an active entry of a terminal job (the index update died) becomes a done entry; a
done entry of a job already gone (another replica archived it) is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ganfolk.runtime import jetstream, limits
from ganfolk.runtime.storage import ObjectNotFound, ObjectStore
from ganfolk.v1 import jobs_pb2
from services.coordinator import pipeline

log = logging.getLogger(__name__)

ACTIVE = "index.active."
DONE = "index.done."
# Written once every job in the bucket is indexed (deployments from before the index).
INDEXED_MARKER = "index.v1"
# The archive pass looks at finished jobs at most this often (every sweep when the
# retention is shorter): a finished job waits for days, checking it every 5 s buys nothing.
ARCHIVE_EVERY_S = 60.0


def archive_key(job_id: str) -> str:
    """Where a job's final record is kept once it has left the jobs bucket."""
    return f"jobs/{job_id}/job.json"


def seconds(timestamp: Timestamp) -> float:
    """A timestamp in seconds, fraction included (``ToSeconds`` truncates)."""
    return timestamp.ToNanoseconds() / 1e9


def _seconds(value: bytes) -> float:
    return float(value.decode())


def stamp(seconds: float) -> bytes:
    return f"{seconds:.3f}".encode()


class JobIndex(jetstream.KvMirror[float]):
    """The index entries of the jobs bucket, mirrored in memory by a watch.

    A sweep then costs no read of the index at all; until the watch has replayed the
    entries (and after it broke) :meth:`entries` replays them itself.
    """

    def __init__(self, kv: KeyValue) -> None:
        super().__init__(kv, _seconds, "job-index", keys="index.>")

    async def entries(self) -> dict[str, float]:
        """Index key -> seconds, for every active and done entry (do not modify)."""
        if self._current:
            return self._entries
        watcher = await self.kv.watch("index.>", ignore_deletes=True)
        found: dict[str, float] = {}
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value:
                    found[entry.key] = _seconds(entry.value)
        finally:
            await watcher.stop()
        return found

    async def active(self) -> dict[str, float]:
        """job id -> submitted at, for every job not yet terminal."""
        return _with_prefix(await self.entries(), ACTIVE)

    async def done(self) -> dict[str, float]:
        """job id -> finished at, for every terminal job still in the bucket."""
        return _with_prefix(await self.entries(), DONE)

    async def activate(self, job_id: str, at: float) -> None:
        """Index a job about to be created (before it exists: a crash leaves it findable)."""
        await self.kv.put(ACTIVE + job_id, stamp(at))

    async def finished(self, job_id: str, at: float) -> None:
        """Move a job that became terminal from the active to the done entries."""
        await self.kv.put(DONE + job_id, stamp(at))
        await self._remove(ACTIVE + job_id)

    async def forget(self, job_id: str) -> None:
        """Drop both entries of a job that has left the bucket."""
        await asyncio.gather(self._remove(ACTIVE + job_id), self._remove(DONE + job_id))

    async def index_bucket(self) -> int:
        """Index every job of a bucket written before the index existed; how many there were.

        Runs once per bucket (a marker key says it ran); replicas racing through it write
        the same entries.
        """
        if (await jetstream.kv_read(self.kv, INDEXED_MARKER)).value is not None:
            return 0
        values = await jetstream.kv_values(self.kv)
        jobs = [jobs_pb2.Job.FromString(v) for key, v in values.items() if not key.startswith("index.")]
        for job in jobs:
            if job.state in pipeline.TERMINAL:
                await self.kv.put(DONE + job.job_id, stamp(seconds(job.updated_at)))
            else:
                await self.kv.put(ACTIVE + job.job_id, stamp(seconds(job.created_at)))
        await self.kv.put(INDEXED_MARKER, stamp(time.time()))
        return len(jobs)

    async def _remove(self, key: str) -> None:
        # A delete marker, not an erasure: mirrors on other replicas must see the entry go.
        # Not a purge either: on nats-server 2.9 a watch missed one of two purges (rollups)
        # published together; deletes all arrive. The markers are erased later (:func:`erase`).
        await self.kv.delete(key)


def _with_prefix(entries: dict[str, float], prefix: str) -> dict[str, float]:
    return {key.removeprefix(prefix): at for key, at in entries.items() if key.startswith(prefix)}


async def erase(js: JetStreamContext, kv: KeyValue, keys: Iterable[str]) -> None:
    """Remove every message of ``keys`` from the bucket's stream, purge markers included.

    A KV delete or purge leaves a marker per key, so a bucket that forgets keys that way
    still grows by one message per job. Used for a job's entry once it is archived (nobody
    watches job entries) and for index markers every mirror has long seen.
    """
    for key in keys:
        await js.purge_stream(kv._stream, subject=f"{kv._pre}{key}")


def archive_record(job: jobs_pb2.Job) -> bytes:
    """The archived form of a job: protobuf JSON (readable, and parsed back exactly)."""
    return json_format.MessageToJson(job, preserving_proto_field_name=True, sort_keys=True).encode()


def read_archive(store: ObjectStore, job_id: str) -> jobs_pb2.Job | None:
    """The archived job, or None when ``job_id`` was never archived (blocking: call in a thread)."""
    if not limits.JOB_ID.fullmatch(job_id):
        return None  # not an id the coordinator hands out: no key is built from it
    try:
        data = store.get(archive_key(job_id))
    except ObjectNotFound:
        return None
    return json_format.Parse(data, jobs_pb2.Job(), ignore_unknown_fields=True)
