"""A small Python client for the jobs API, used by the `ganfolk` CLI.

async with JobsClient("127.0.0.1:50051") as client:
    job = (await client.submit(jobs_pb2.JobSpec(prompt="charcoal sketch of a shy Irish girl"))).job
    async for update in client.watch(job.job_id):
        print(update.job.percent, update.event.message)
    await download_outputs(client, job, Path("portraits") / job.job_id)

Everything goes through the coordinator: outputs come as presigned URLs or streamed bytes
(GetOutputs), so a client needs the coordinator's address and token, never store credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from ganfolk.runtime.grpc_server import channel_options
from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc


class JobsClient:
    """The jobs API over gRPC (optional bearer token and TLS)."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        token: str | None = None,
        root_certificates: bytes | None = None,
    ) -> None:
        options = channel_options(64)
        if root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.aio.secure_channel(target, creds, options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options)
        self.stub = jobs_pb2_grpc.JobServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    async def __aenter__(self) -> JobsClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.channel.close(None)

    async def submit(self, spec: jobs_pb2.JobSpec, idempotency_key: str = "") -> jobs_pb2.SubmitResponse:
        return await self.stub.Submit(
            jobs_pb2.SubmitRequest(spec=spec, idempotency_key=idempotency_key), metadata=self.metadata
        )

    async def get(self, job_id: str) -> jobs_pb2.Job:
        return (await self.stub.Get(jobs_pb2.GetRequest(job_id=job_id), metadata=self.metadata)).job

    async def list(self, state: int = 0, page_size: int = 50) -> list[jobs_pb2.Job]:
        jobs: list[jobs_pb2.Job] = []
        token = ""
        while True:
            reply = await self.stub.List(
                jobs_pb2.ListRequest(page_size=page_size, page_token=token, state=state),  # type: ignore[arg-type]
                metadata=self.metadata,
            )
            jobs.extend(reply.jobs)
            token = reply.next_page_token
            if not token:
                return jobs

    async def watch(self, job_id: str) -> AsyncIterator[jobs_pb2.WatchResponse]:
        async for update in self.stub.Watch(jobs_pb2.WatchRequest(job_id=job_id), metadata=self.metadata):
            yield update

    async def cancel(self, job_id: str, reason: str = "") -> jobs_pb2.Job:
        reply = await self.stub.Cancel(
            jobs_pb2.CancelRequest(job_id=job_id, reason=reason), metadata=self.metadata
        )
        return reply.job

    async def review(self, request: jobs_pb2.ReviewRequest) -> jobs_pb2.Job:
        return (await self.stub.Review(request, metadata=self.metadata)).job

    async def outputs(
        self, job_id: str, stream: bool = False, names: Sequence[str] = ()
    ) -> AsyncIterator[jobs_pb2.GetOutputsResponse]:
        """The job's outputs as GetOutputs sends them: URLs, or chunks with ``stream``;
        only those in ``names`` when given ("final", "ranked_01", "manifest"...)."""
        request = jobs_pb2.GetOutputsRequest(job_id=job_id, stream=stream, names=list(names))
        async for part in self.stub.GetOutputs(request, metadata=self.metadata):
            yield part


def job_json(job: jobs_pb2.Job) -> dict[str, Any]:
    """The job as JSON-ready data, without inline image bytes."""
    data = MessageToDict(job, preserving_proto_field_name=True)
    return data


class OutputError(RuntimeError):
    """An output could not be downloaded intact."""


def _fetch(url: str, timeout: float = 15.0) -> bytes:
    if not url.startswith(("http://", "https://")):
        raise OutputError(f"refusing to fetch {url[:40]!r}: not an http(s) URL")
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return bytes(reply.read())


def _safe_name(filename: str) -> str:
    # The name comes from the server: never let it leave the output folder.
    name = Path(filename).name
    if not name or name in (".", "..") or name != filename:
        raise OutputError(f"refusing output file name {filename!r}")
    return name


def _check(part: jobs_pb2.GetOutputsResponse, data: bytes) -> None:
    if len(data) != part.size or (part.sha256 and hashlib.sha256(data).hexdigest() != part.sha256):
        raise OutputError(f"{part.name}: got {len(data):,} bytes that do not match its size/sha256")


async def _download(client: JobsClient, job_id: str, out: Path, stream: bool) -> dict[str, str]:
    written: dict[str, str] = {}
    pending: dict[str, bytearray] = {}
    async for part in client.outputs(job_id, stream):
        path = out / _safe_name(part.filename)
        if part.WhichOneof("content") == "url":
            data = await asyncio.to_thread(_fetch, part.url)
        else:
            buffer = pending.setdefault(part.name, bytearray())
            if part.offset != len(buffer):
                raise OutputError(f"{part.name}: chunk at {part.offset:,}, expected {len(buffer):,}")
            buffer.extend(part.chunk)
            if len(buffer) < part.size:
                continue
            data = bytes(pending.pop(part.name))
        _check(part, data)
        await asyncio.to_thread(path.write_bytes, data)
        written[part.name] = str(path)
    if pending:
        raise OutputError(f"the stream ended inside {', '.join(pending)}")
    return written


async def download_outputs(client: JobsClient, job: jobs_pb2.Job, out: Path) -> dict[str, str]:
    """Write a job's images, manifest and ``job.json`` to ``out`` through the coordinator.

    Presigned URLs are fetched directly from the store; when the store is not reachable
    from here (a URL signed for an in-cluster host name), the bytes are asked for again
    through the coordinator's stream.
    """
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    try:
        written = await _download(client, job.job_id, out, stream=False)
    except (urllib.error.URLError, OSError, OutputError):
        written = await _download(client, job.job_id, out, stream=True)
    meta = out / "job.json"
    await asyncio.to_thread(meta.write_text, json.dumps(job_json(job), indent=2))
    written["metadata"] = str(meta)
    return written
