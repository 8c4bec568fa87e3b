"""NATS adapter of the StyleGAN2 service: the ``sample`` stage."""

from __future__ import annotations

from typing import Any

from ganfolk.runtime.catalog import Stage
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.storage import ObjectStore
from ganfolk.runtime.worker import StageHandler, TaskContext
from ganfolk.v1 import stylegan_pb2
from services.stylegan import ops
from services.stylegan.config import StyleGANSettings
from services.stylegan.core import Sampler


def stages(sampler: Sampler, store: ObjectStore, settings: StyleGANSettings) -> list[StageHandler[Any]]:
    async def handle(request: stylegan_pb2.SampleRequest, ctx: TaskContext) -> stylegan_pb2.SampleResponse:
        return await ops.sample(sampler, store, request, settings, task=ctx.meta)

    # A GPU replica takes one task at a time; a task of 100 seeds may run for minutes on CPU,
    # held by heartbeats: the default ack wait only bounds how long a dead worker keeps it.
    policy = StagePolicy(max_deliver=4, concurrency=1, max_ack_pending=64)
    return [StageHandler(Stage.SAMPLE, stylegan_pb2.SampleRequest, handle, "sample", policy)]
