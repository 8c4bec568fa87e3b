"""NATS adapter of the finishing service: the ``finish`` stage."""

from __future__ import annotations

from typing import Any

from ganfolk.runtime.catalog import Stage
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.storage import ObjectStore
from ganfolk.runtime.worker import StageHandler, TaskContext
from ganfolk.v1 import upscale_pb2
from services.upscale import ops
from services.upscale.config import UpscaleSettings
from services.upscale.core import Finisher


def stages(finisher: Finisher, store: ObjectStore, settings: UpscaleSettings) -> list[StageHandler[Any]]:
    async def handle(request: upscale_pb2.FinishRequest, ctx: TaskContext) -> upscale_pb2.FinishResponse:
        return await ops.finish(finisher, store, request, settings, task=ctx.meta)

    # ncnn on CPU needs minutes for 512 -> 2048; heartbeats keep the task while it runs, and
    # the default ack wait hands a dead worker's task to another replica within half a minute.
    policy = StagePolicy(max_deliver=4, concurrency=1, max_ack_pending=32)
    return [StageHandler(Stage.FINISH, upscale_pb2.FinishRequest, handle, "finish", policy)]
