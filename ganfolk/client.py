"""A small Python client for the jobs API, used by the `ganfolk` CLI.

async with JobsClient("127.0.0.1:50051") as client:
    job = (await client.submit(jobs_pb2.JobSpec(prompt="charcoal sketch of a shy Irish girl"))).job
    async for update in client.watch(job.job_id):
        print(update.job.percent, update.event.message)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from ganfolk.runtime.grpc_server import channel_options
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc


class JobsClient:
    """Submit, Get, List, Watch, Cancel and Review over gRPC (optional bearer token and TLS)."""

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


def job_json(job: jobs_pb2.Job) -> dict[str, Any]:
    """The job as JSON-ready data, without inline image bytes."""
    data = MessageToDict(job, preserving_proto_field_name=True)
    return data


def download_outputs(job: jobs_pb2.Job, store: ObjectStore, out: Path) -> dict[str, str]:
    """Write the final image, intermediates and metadata of a finished job to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def save(name: str, ref: common_pb2.ImageRef) -> None:
        if ref.WhichOneof("source") == "uri":
            data = store.get_uri(ref.uri, ref.sha256 or None)
        elif ref.WhichOneof("source") == "inline_data":
            data = ref.inline_data
        else:
            return
        path = out / f"{name}.png"
        path.write_bytes(data)
        written[name] = str(path)

    save("final", job.final_image)
    save("refined", job.refined_image)
    save("best_sample", job.best_sample)
    for status in job.stages:
        if status.stage == jobs_pb2.STAGE_RANK:
            for i, ref in enumerate(status.images[:16]):
                save(f"ranked_{i:02d}", ref)
    meta = out / "job.json"
    meta.write_text(json.dumps(job_json(job), indent=2))
    written["metadata"] = str(meta)
    return written
