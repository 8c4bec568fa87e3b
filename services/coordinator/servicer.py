"""gRPC adapter of the coordinator: the jobs API."""

from __future__ import annotations

import hmac
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc

from ganfolk.runtime import limits
from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.service import CoreHolder
from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc
from services.coordinator.config import CoordinatorSettings
from services.coordinator.core import Coordinator

MAX_PAGE = 200
# List's page token: the offset of the page's first job, as the previous page returned it.
PAGE_TOKEN = re.compile(r"[0-9]{1,9}")
# A cancel's reason goes into the job's error and events.
MAX_REASON_CHARS = 500


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, holder: CoreHolder[Coordinator], settings: CoordinatorSettings) -> None:
        self.holder = holder
        # The server's token interceptor checks it too; kept here for servicers run without it.
        self.token = settings.grpc_token()

    async def _engine(self, context: Any) -> Any:
        if self.token:
            metadata = dict(context.invocation_metadata() or ())
            sent = str(metadata.get("authorization", ""))
            if not hmac.compare_digest(sent, f"Bearer {self.token}"):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "send 'authorization: Bearer <token>'")
        return self.holder.get().engine

    async def Submit(self, request: jobs_pb2.SubmitRequest, context: Any) -> jobs_pb2.SubmitResponse:
        """Start a portrait job; the same idempotency key returns the first job.

        The spec is checked in full first (:func:`services.coordinator.pipeline.validate_spec`):
        a request that could not succeed creates no job and publishes no task.
        """
        engine = await self._engine(context)
        limits.check_line(request.idempotency_key, "idempotency_key", limits.MAX_IDEMPOTENCY_KEY_CHARS)
        job, existing = await engine.submit(request.spec, request.idempotency_key)
        return jobs_pb2.SubmitResponse(job=job, existing=existing)

    async def Get(self, request: jobs_pb2.GetRequest, context: Any) -> jobs_pb2.GetResponse:
        """The job's current state."""
        engine = await self._engine(context)
        return jobs_pb2.GetResponse(job=await engine.get(limits.check_job_id(request.job_id)))

    async def List(self, request: jobs_pb2.ListRequest, context: Any) -> jobs_pb2.ListResponse:
        """Jobs, newest first; page_token is the offset returned by the previous page."""
        engine = await self._engine(context)
        size = request.page_size or 50
        if size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be at most {MAX_PAGE}")
        if request.page_token and not PAGE_TOKEN.fullmatch(request.page_token):
            raise InvalidArgument(
                f"page_token {request.page_token[:20]!r} is not one returned by List: "
                "send the previous page's next_page_token, or none for the first page"
            )
        offset = int(request.page_token or 0)
        if request.state not in jobs_pb2.JobState.values():
            raise InvalidArgument(f"state {request.state} is not a JobState; leave it unset for every job")
        jobs = await engine.list(request.state)
        page = jobs[offset : offset + size]
        token = str(offset + size) if offset + size < len(jobs) else ""
        return jobs_pb2.ListResponse(jobs=page, next_page_token=token)

    async def Watch(
        self, request: jobs_pb2.WatchRequest, context: Any
    ) -> AsyncIterator[jobs_pb2.WatchResponse]:
        """Stream the job's updates from its start (late joiners catch up) until it ends."""
        engine = await self._engine(context)
        async for update in engine.watch(limits.check_job_id(request.job_id)):
            yield update

    async def Cancel(self, request: jobs_pb2.CancelRequest, context: Any) -> jobs_pb2.CancelResponse:
        """Cancel a job; its queued tasks are skipped and a running refine stops."""
        engine = await self._engine(context)
        job_id = limits.check_job_id(request.job_id)
        reason = limits.check_line(request.reason, "reason", MAX_REASON_CHARS)
        return jobs_pb2.CancelResponse(job=await engine.cancel(job_id, reason))

    async def Review(self, request: jobs_pb2.ReviewRequest, context: Any) -> jobs_pb2.ReviewResponse:
        """Approve, edit or reject a job that waits for review."""
        engine = await self._engine(context)
        limits.check_job_id(request.job_id)
        return jobs_pb2.ReviewResponse(job=await engine.review(request))

    async def GetOutputs(
        self, request: jobs_pb2.GetOutputsRequest, context: Any
    ) -> AsyncIterator[jobs_pb2.GetOutputsResponse]:
        """The job's images and manifest: presigned URLs from an S3 store, else streamed bytes."""
        engine = await self._engine(context)
        job_id = limits.check_job_id(request.job_id)
        async for part in engine.outputs(job_id, request.stream, list(request.names)):
            yield part
