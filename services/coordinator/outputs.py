"""A job's outputs for GetOutputs: presigned URLs where the store signs them, else bytes.

Clients outside the cluster reach only the coordinator, so they never hold store
credentials: for an S3 store each output is a short-lived presigned GET URL; for the local
store (a path on the coordinator's machine) the bytes travel in the gRPC stream.

The manifest is assembled here from the per-task manifest objects the engine wrote while
the job ran (see ``pipeline.manifest_record``): every sample with its seed, the ranking
with scores, and the chosen images. It is stored as ``jobs/<id>/manifest.json`` (the same
content for the same job state, so writing it again is harmless) and served like the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from ganfolk.runtime.storage import ObjectStore, sha256_hex
from ganfolk.v1 import common_pb2, jobs_pb2

log = logging.getLogger(__name__)
S = jobs_pb2
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Output:
    name: str
    filename: str
    ref: common_pb2.ImageRef


def snapshot_iteration(ref: common_pb2.ImageRef) -> int | None:
    """The refinement iteration of a snapshot (vqgan stores ``.../iter-NNNN.png``); None for others."""
    found = re.search(r"/iter-(\d+)\.png$", ref.uri)
    return int(found.group(1)) if found else None


def image_outputs(job: jobs_pb2.Job) -> list[Output]:
    """The job's chosen images: final, refined, best sample, the ranked ones in order, the
    refinement snapshots, then the images earlier review rounds replaced."""
    found = [
        Output(name, f"{name}.png", ref)
        for name, ref in (
            ("final", job.final_image),
            ("refined", job.refined_image),
            ("best_sample", job.best_sample),
        )
        if ref.WhichOneof("source")
    ]
    for status in job.stages:
        if status.stage == S.STAGE_RANK:
            found.extend(
                Output(f"ranked_{i:02d}", f"ranked_{i:02d}.png", r) for i, r in enumerate(status.images)
            )
        if status.stage == S.STAGE_REFINE:
            for r in status.images:
                iteration = snapshot_iteration(r)
                if iteration is not None:
                    found.append(Output(f"snapshot_{iteration:04d}", f"snapshot_{iteration:04d}.png", r))
    for i, record in enumerate(job.reviews):
        for name, ref in (("final", record.final_image), ("refined", record.refined_image)):
            # Only images a later round replaced; the rest are the job's current ones.
            if ref.WhichOneof("source") and ref.uri not in (job.final_image.uri, job.refined_image.uri):
                found.append(Output(f"review_{i:02d}_{name}", f"review_{i:02d}_{name}.png", ref))
    return found


def manifest_key(job_id: str) -> str:
    return f"jobs/{job_id}/manifest.json"


def build_manifest(store: ObjectStore, job: jobs_pb2.Job) -> bytes:
    """The job's manifest (JSON bytes) from its per-task manifest objects, in a stable order."""
    samples: list[dict[str, Any]] = []
    ranked: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    for status in job.stages:
        if not status.manifest_prefix:
            continue
        for info in store.list(status.manifest_prefix):
            record = json.loads(store.get(info.key))
            samples.extend(record.get("images", []))
            ranked.extend(record.get("ranked", []))
            tasks.append(
                {
                    k: record.get(k)
                    for k in ("stage", "task_id", "shard_index", "scored", "provenance")
                    if k in record
                }
            )
    samples.sort(key=lambda s: int(s.get("seed", 0)))
    ranked.sort(key=lambda r: int(r.get("rank", 0)))
    tasks.sort(key=lambda t: (str(t.get("stage")), int(t.get("shard_index") or 0)))

    def ref(r: common_pb2.ImageRef) -> dict[str, Any] | None:
        return MessageToDict(r, preserving_proto_field_name=True) if r.WhichOneof("source") else None

    manifest = {
        "job_id": job.job_id,
        "state": S.JobState.Name(job.state),
        "prompt": job.prompt,
        "seed": job.spec.seed,
        "final": ref(job.final_image),
        "refined": ref(job.refined_image),
        "best_sample": ref(job.best_sample),
        "samples": samples,
        "ranked": ranked,
        "tasks": tasks,
    }
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def _chunks(name: str, filename: str, media_type: str, data: bytes) -> Iterator[jobs_pb2.GetOutputsResponse]:
    digest = sha256_hex(data)
    for offset in range(0, max(len(data), 1), CHUNK_BYTES):
        yield jobs_pb2.GetOutputsResponse(
            name=name,
            filename=filename,
            media_type=media_type,
            size=len(data),
            sha256=digest,
            chunk=data[offset : offset + CHUNK_BYTES],
            offset=offset,
        )


def _deliver(
    store: ObjectStore,
    name: str,
    filename: str,
    key: str,
    sha256: str,
    media_type: str,
    stream: bool,
    ttl_s: int,
) -> list[jobs_pb2.GetOutputsResponse]:
    """One output: a presigned URL message, or its bytes in chunks (runs in a worker thread)."""
    if not stream:
        url = store.presigned_url(key, timedelta(seconds=ttl_s))
        # A file:// URI names a path on the coordinator's machine: useless to a remote client.
        if url.startswith(("http://", "https://")):
            info = store.stat(key)
            expires = Timestamp()
            expires.FromDatetime(datetime.now(UTC) + timedelta(seconds=ttl_s))
            return [
                jobs_pb2.GetOutputsResponse(
                    name=name,
                    filename=filename,
                    media_type=media_type,
                    size=info.size,
                    sha256=sha256 or info.sha256,
                    url=url,
                    url_expires_at=expires,
                )
            ]
    data = store.get(key, sha256 or None)
    return list(_chunks(name, filename, media_type, data))


async def job_outputs(
    store: ObjectStore, job: jobs_pb2.Job, stream: bool, ttl_s: int, names: Sequence[str] = ()
) -> AsyncIterator[jobs_pb2.GetOutputsResponse]:
    """Every output of ``job`` (or those named in ``names``): its images, then its manifest."""
    wanted = set(names)
    for out in image_outputs(job):
        if wanted and out.name not in wanted:
            continue
        media = out.ref.media_type or "image/png"
        if out.ref.WhichOneof("source") == "inline_data":
            for part in _chunks(out.name, out.filename, media, out.ref.inline_data):
                yield part
            continue
        try:
            key = store.key_from_uri(out.ref.uri)
        except ValueError:
            log.warning("output %s is outside the store (%s); not served", out.name, out.ref.uri)
            continue
        parts = await asyncio.to_thread(
            _deliver, store, out.name, out.filename, key, out.ref.sha256, media, stream, ttl_s
        )
        for part in parts:
            yield part
    if wanted and "manifest" not in wanted:
        return
    data = await asyncio.to_thread(build_manifest, store, job)
    key = manifest_key(job.job_id)
    await asyncio.to_thread(store.put, key, data, "application/json")
    parts = await asyncio.to_thread(
        _deliver, store, "manifest", "manifest.json", key, sha256_hex(data), "application/json", stream, ttl_s
    )
    for part in parts:
        yield part
