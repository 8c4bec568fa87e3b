"""The gallery on the real stack: every service with tiny weights, the coordinator (with a
bearer token, so the gallery must pass the reviewer's on), and the gallery's web app, all on
random loopback ports; plus a small HTTP client with a cookie jar for the routes."""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ganfolk.runtime.service import load_definition
from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc
from tests.e2e.stack import RECIPIENT, Models, job_spec
from tests.fixtures.services import serving

S = jobs_pb2
TOKEN = "gallery-test-token"
SERVICES = ("stylegan", "clip", "vqgan", "upscale", "text", "mint")


@dataclass
class Stack:
    stub: jobs_pb2_grpc.JobServiceStub
    url: str
    store: Path
    auth: tuple[tuple[str, str], ...]
    mint_channel: Any


@contextlib.asynccontextmanager
async def gallery_stack(models: Models, nats_url: str, store: Path, rpc_url: str) -> AsyncIterator[Stack]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in models.env.items():
            mp.setenv(key, value)
        mp.setenv("GANFOLK_MINT_RPC_URL", rpc_url)
        mp.setenv("GANFOLK_STATE_DIR", str(store.parent / "state"))
        mp.delenv("GANFOLK_TEXT_LLM_BASE_URL", raising=False)
        mp.setenv("GANFOLK_COORDINATOR_AUTH_TOKEN", TOKEN)
        mp.setenv("GANFOLK_GALLERY_AUTH_TOKEN", TOKEN)
        common = {"nats_url": nats_url, "store_url": str(store)}
        async with contextlib.AsyncExitStack() as stack:
            ports = {}
            channels = {}
            for name in SERVICES:
                running, channel = await stack.enter_async_context(serving(load_definition(name), **common))
                ports[name], channels[name] = running.port, channel
            coordinator, channel = await stack.enter_async_context(
                serving(
                    load_definition("coordinator"),
                    coordinator_sweep_interval_s=0.5,
                    coordinator_text_target=f"127.0.0.1:{ports['text']}",
                    **common,
                )
            )
            gallery, _ = await stack.enter_async_context(
                serving(
                    load_definition("gallery"),
                    gallery_http_port=0,
                    gallery_coordinator=f"127.0.0.1:{coordinator.port}",
                    **common,
                )
            )
            core = gallery.holder.get()
            yield Stack(
                jobs_pb2_grpc.JobServiceStub(channel),
                core.url.rstrip("/"),
                store,
                (("authorization", f"Bearer {TOKEN}"),),
                channels["mint"],
            )


def collection_spec(**kw: Any) -> jobs_pb2.JobSpec:
    """A collection of two minting portraits (review is on by default for collections)."""
    base: dict[str, Any] = {"prompt": "", "collection_size": 2, "num_samples": 4, "recipient": RECIPIENT}
    return job_spec(**{**base, **kw})


async def wait_job(stack: Stack, job_id: str, states: set[int], timeout: float = 240) -> jobs_pb2.Job:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await stack.stub.Get(jobs_pb2.GetRequest(job_id=job_id), metadata=stack.auth)).job
        if job.state in states:
            return job
        if job.state in (S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED) and job.state not in states:
            raise AssertionError(f"job {job_id} ended {S.JobState.Name(job.state)}: {job.error}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} stuck in {S.JobState.Name(job.state)}")
        await asyncio.sleep(0.25)


async def collection_awaiting_review(stack: Stack) -> tuple[jobs_pb2.Job, list[jobs_pb2.Job]]:
    """Submit a collection of two and wait until both portraits await review."""
    submitted = await stack.stub.Submit(jobs_pb2.SubmitRequest(spec=collection_spec()), metadata=stack.auth)
    parent = await wait_job(stack, submitted.job.job_id, {S.JOB_STATE_SUCCEEDED})
    assert parent.spec.require_review, "review is on by default for collections"
    children = [await wait_job(stack, c, {S.JOB_STATE_AWAITING_REVIEW}) for c in parent.children]
    return parent, children


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Browser:
    """HTTP with cookies and no automatic redirects, like a browser's view of the routes."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())

    def _open(self, request: urllib.request.Request) -> Reply:
        try:
            with self.opener.open(request, timeout=120) as reply:
                return Reply(reply.status, reply.headers, reply.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.headers, exc.read())

    async def get(self, path: str) -> Reply:
        return await asyncio.to_thread(self._open, urllib.request.Request(self.base + path))

    async def post(
        self, path: str, fields: dict[str, str], body: bytes | None = None, ctype: str = ""
    ) -> Reply:
        data = body if body is not None else urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(self.base + path, data=data, method="POST")
        request.add_header("Content-Type", ctype or "application/x-www-form-urlencoded")
        return await asyncio.to_thread(self._open, request)

    async def csrf(self, path: str = "/signin") -> str:
        page = await self.get(path)
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert found, page.text[:500]
        return found.group(1)

    async def sign_in(self, token: str = TOKEN) -> Reply:
        return await self.post("/signin", {"csrf_token": await self.csrf(), "token": token, "next": "/jobs"})
