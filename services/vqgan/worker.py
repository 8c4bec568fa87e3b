"""NATS adapter of the VQGAN+CLIP service: the ``refine`` stage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ganfolk.runtime.catalog import Stage
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.storage import ObjectStore
from ganfolk.runtime.worker import StageHandler, TaskCancelled, TaskContext
from ganfolk.v1 import vqgan_pb2
from services.vqgan import ops
from services.vqgan.config import VQGANSettings
from services.vqgan.core import VQGANCore
from services.vqgan.refine import RefineStopped

log = logging.getLogger(__name__)


def stages(core: VQGANCore, store: ObjectStore, settings: VQGANSettings) -> list[StageHandler[Any]]:
    async def handle(request: vqgan_pb2.RefineRequest, ctx: TaskContext) -> vqgan_pb2.RefineResponse:
        loop = asyncio.get_running_loop()
        cancelled = False

        def should_stop() -> bool:
            # Called from the refinement thread before every iteration; the worker's watched set of
            # cancelled jobs answers it on the loop without a KV read.
            nonlocal cancelled
            try:
                cancelled = asyncio.run_coroutine_threadsafe(ctx.cancelled(), loop).result(timeout=10)
            except Exception as exc:  # broker hiccup: keep refining, the next iteration asks again
                log.warning("could not check cancellation: %s", exc)
            return cancelled

        final: vqgan_pb2.RefineResponse | None = None
        try:
            async with contextlib.aclosing(
                ops.refine_stream(core, store, request, settings, should_stop, task=ctx.meta)
            ) as stream:
                async for reply in stream:
                    if reply.done:
                        final = reply
                        break
                    await ctx.progress_throttled(
                        100.0 * (reply.iteration + 1) / max(reply.total_iterations, 1),
                        f"iteration {reply.iteration}/{reply.total_iterations} loss {reply.loss:.4f}",
                        images=[reply.snapshot] if reply.HasField("snapshot") else [],
                        min_interval_s=settings.vqgan_progress_interval_s,
                    )
        except RefineStopped:
            if cancelled:
                raise TaskCancelled() from None
            raise
        if final is None:  # the stream ended without a result: only a stop ends it that way
            raise TaskCancelled()
        return final

    # One refinement fills a GPU; 50 iterations at 512 px with cutn 64 take about a minute there and
    # far longer on CPU. Heartbeats (every iteration, and the loop's own) keep the task; the ack wait
    # only matters when the worker died, and then the task goes to another replica within it.
    policy = StagePolicy(max_deliver=3, concurrency=1, max_ack_pending=8)
    return [StageHandler(Stage.REFINE, vqgan_pb2.RefineRequest, handle, "refine", policy)]
