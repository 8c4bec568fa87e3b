"""NATS adapter of the CLIP service: the ``rank`` stage."""

from __future__ import annotations

from typing import Any

from ganfolk.runtime.catalog import Stage
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.storage import ObjectStore
from ganfolk.runtime.worker import StageHandler, TaskContext
from ganfolk.v1 import clip_pb2
from services.clip import ops
from services.clip.config import ClipSettings
from services.clip.core import ClipCore


def stages(core: ClipCore, store: ObjectStore, settings: ClipSettings) -> list[StageHandler[Any]]:
    async def handle(request: clip_pb2.RankRequest, ctx: TaskContext) -> clip_pb2.RankResponse:
        async def progress(done: int, total: int) -> None:
            # Each scored chunk resets the ack timer, so 1,000 images on CPU are not redelivered.
            await ctx.heartbeat()

        return await ops.rank(core, store, request, settings, progress)

    # Ranks of different jobs share forward passes through the dynamic batcher.
    policy = StagePolicy(max_deliver=4, concurrency=2, max_ack_pending=32)
    return [StageHandler(Stage.RANK, clip_pb2.RankRequest, handle, "rank", policy)]
