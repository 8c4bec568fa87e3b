"""gRPC adapter of the coordinator: the jobs API."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Any

import grpc

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.service import CoreHolder
from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc
from services.coordinator.config import CoordinatorSettings
from services.coordinator.core import Coordinator

MAX_PAGE = 200


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, holder: CoreHolder[Coordinator], settings: CoordinatorSettings) -> None:
        self.holder = holder
        token = settings.coordinator_auth_token
        self.token = token.get_secret_value() if token else ""

    async def _engine(self, context: Any) -> Any:
        if self.token:
            metadata = dict(context.invocation_metadata() or ())
            sent = str(metadata.get("authorization", ""))
            if not hmac.compare_digest(sent, f"Bearer {self.token}"):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "send 'authorization: Bearer <token>'")
        return self.holder.get().engine

    async def Submit(self, request: jobs_pb2.SubmitRequest, context: Any) -> jobs_pb2.SubmitResponse:
        """Start a portrait job; the same idempotency key returns the first job."""
        engine = await self._engine(context)
        job, existing = await engine.submit(request.spec, request.idempotency_key)
        return jobs_pb2.SubmitResponse(job=job, existing=existing)

    async def Get(self, request: jobs_pb2.GetRequest, context: Any) -> jobs_pb2.GetResponse:
        """The job's current state."""
        if not request.job_id:
            raise InvalidArgument("job_id is required")
        return jobs_pb2.GetResponse(job=await (await self._engine(context)).get(request.job_id))

    async def List(self, request: jobs_pb2.ListRequest, context: Any) -> jobs_pb2.ListResponse:
        """Jobs, newest first; page_token is the offset returned by the previous page."""
        size = request.page_size or 50
        if size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be at most {MAX_PAGE}")
        try:
            offset = int(request.page_token or 0)
        except ValueError:
            raise InvalidArgument("page_token is not one returned by List") from None
        jobs = await (await self._engine(context)).list(request.state)
        page = jobs[offset : offset + size]
        token = str(offset + size) if offset + size < len(jobs) else ""
        return jobs_pb2.ListResponse(jobs=page, next_page_token=token)

    async def Watch(
        self, request: jobs_pb2.WatchRequest, context: Any
    ) -> AsyncIterator[jobs_pb2.WatchResponse]:
        """Stream the job's updates from its start (late joiners catch up) until it ends."""
        if not request.job_id:
            raise InvalidArgument("job_id is required")
        engine = await self._engine(context)
        async for update in engine.watch(request.job_id):
            yield update

    async def Cancel(self, request: jobs_pb2.CancelRequest, context: Any) -> jobs_pb2.CancelResponse:
        """Cancel a job; its queued tasks are skipped and a running refine stops."""
        if not request.job_id:
            raise InvalidArgument("job_id is required")
        return jobs_pb2.CancelResponse(
            job=await (await self._engine(context)).cancel(request.job_id, request.reason)
        )

    async def Review(self, request: jobs_pb2.ReviewRequest, context: Any) -> jobs_pb2.ReviewResponse:
        """Approve, edit or reject a job that waits for review."""
        if not request.job_id:
            raise InvalidArgument("job_id is required")
        return jobs_pb2.ReviewResponse(job=await (await self._engine(context)).review(request))

    async def GetOutputs(
        self, request: jobs_pb2.GetOutputsRequest, context: Any
    ) -> AsyncIterator[jobs_pb2.GetOutputsResponse]:
        """The job's images and manifest: presigned URLs from an S3 store, else streamed bytes."""
        if not request.job_id:
            raise InvalidArgument("job_id is required")
        engine = await self._engine(context)
        async for part in engine.outputs(request.job_id, request.stream, list(request.names)):
            yield part
