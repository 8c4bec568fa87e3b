"""The gallery's one door to GANfolk: the coordinator's jobs API, with the reviewer's token.

One channel for the process; every call carries the signed-in reviewer's bearer token, so
the coordinator decides what the reviewer may do, exactly as for the CLI.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from ganfolk.runtime.grpc_server import channel_options
from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc


class OutputUnavailable(RuntimeError):
    """An image the job names could not be fetched intact (deleted, corrupt, not produced)."""


class Jobs:
    def __init__(self, target: str, timeout_s: float, ca_file: str | None = None) -> None:
        options = channel_options(64)
        if ca_file:
            creds = grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())
            self.channel = grpc.aio.secure_channel(target, creds, options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options)
        self.stub = jobs_pb2_grpc.JobServiceStub(self.channel)
        self.target = target
        self.timeout_s = timeout_s

    @staticmethod
    def _auth(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),) if token else ()

    async def close(self) -> None:
        await self.channel.close(None)

    async def get(self, token: str, job_id: str) -> jobs_pb2.Job:
        reply = await self.stub.Get(
            jobs_pb2.GetRequest(job_id=job_id), metadata=self._auth(token), timeout=self.timeout_s
        )
        return reply.job

    async def list(self, token: str, limit: int = 1000) -> list[jobs_pb2.Job]:
        """Jobs newest first, at most ``limit``."""
        jobs: list[jobs_pb2.Job] = []
        page = ""
        while len(jobs) < limit:
            reply = await self.stub.List(
                jobs_pb2.ListRequest(page_size=200, page_token=page),
                metadata=self._auth(token),
                timeout=self.timeout_s,
            )
            jobs.extend(reply.jobs)
            page = reply.next_page_token
            if not page:
                break
        return jobs[:limit]

    async def probe(self, token: str) -> None:
        """Raise the coordinator's error when it refuses ``token`` (or is unreachable)."""
        await self.stub.List(
            jobs_pb2.ListRequest(page_size=1), metadata=self._auth(token), timeout=self.timeout_s
        )

    async def review(self, token: str, request: jobs_pb2.ReviewRequest) -> jobs_pb2.Job:
        reply = await self.stub.Review(request, metadata=self._auth(token), timeout=self.timeout_s)
        return reply.job

    async def watch(self, token: str, job_id: str) -> AsyncIterator[jobs_pb2.WatchResponse]:
        async for update in self.stub.Watch(jobs_pb2.WatchRequest(job_id=job_id), metadata=self._auth(token)):
            yield update

    async def output(self, token: str, job_id: str, name: str) -> tuple[bytes, str, str]:
        """(bytes, sha256, media type) of one output, streamed through the coordinator.

        Streamed rather than presigned: the gallery never reaches the object store itself.
        """
        request = jobs_pb2.GetOutputsRequest(job_id=job_id, stream=True, names=[name])
        buffer = bytearray()
        sha, media, size = "", "", -1
        try:
            async for part in self.stub.GetOutputs(
                request, metadata=self._auth(token), timeout=self.timeout_s
            ):
                if part.name != name:
                    continue
                if part.offset != len(buffer):
                    raise OutputUnavailable(f"{name}: chunk at {part.offset:,}, expected {len(buffer):,}")
                buffer.extend(part.chunk)
                sha, media, size = part.sha256, part.media_type, part.size
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DATA_LOSS):
                raise OutputUnavailable(f"{name}: {exc.details()}") from None
            raise
        if size < 0:
            raise OutputUnavailable(f"job {job_id} has no output {name!r}")
        data = bytes(buffer)
        if len(data) != size or (sha and hashlib.sha256(data).hexdigest() != sha):
            raise OutputUnavailable(f"{name}: the bytes do not match their size/sha256")
        return data, sha, media or "image/png"
