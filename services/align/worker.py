"""NATS adapter of the align service: the ``align``, ``inpaint`` and ``prepare_dataset`` stages."""

from __future__ import annotations

from typing import Any

from ganfolk.runtime.catalog import Stage
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.storage import ObjectStore
from ganfolk.runtime.worker import StageHandler, TaskContext
from ganfolk.v1 import align_pb2
from services.align import ops
from services.align.config import AlignSettings
from services.align.core import Aligner

# Least seconds between two progress events of a dataset run (the first and last always go out).
PROGRESS_INTERVAL = 1.0


def stages(aligner: Aligner, store: ObjectStore, settings: AlignSettings) -> list[StageHandler[Any]]:
    async def align(request: align_pb2.AlignFaceRequest, ctx: TaskContext) -> align_pb2.AlignFaceResponse:
        return await ops.align_face(aligner, store, request, settings, task=ctx.meta)

    async def inpaint(request: align_pb2.InpaintRequest, ctx: TaskContext) -> align_pb2.InpaintResponse:
        return await ops.inpaint(aligner, store, request, settings, task=ctx.meta)

    async def prepare(
        request: align_pb2.PrepareDatasetRequest, ctx: TaskContext
    ) -> align_pb2.PrepareDatasetResponse:
        last = align_pb2.PrepareDatasetResponse()
        async for message in ops.prepare_dataset(aligner, store, request, settings, task=ctx.meta):
            last = message
            done = message.processed + message.skipped
            current = f": {message.current}" if message.current else ""
            await ctx.progress_throttled(
                100.0 * done / message.total if message.total else 100.0,
                f"{done}/{message.total} files ({message.skipped} skipped){current}",
                min_interval_s=PROGRESS_INTERVAL,
                final=message.done,
            )
        return last

    # Several single-image tasks at once on a CPU node; a dataset run is long and resumable.
    # Both keep the default ack wait: heartbeats hold a long run, a dead worker's is taken over.
    quick = StagePolicy(max_deliver=4, concurrency=2, max_ack_pending=64)
    long = StagePolicy(max_deliver=3, concurrency=1, max_ack_pending=4)
    return [
        StageHandler(Stage.ALIGN, align_pb2.AlignFaceRequest, align, "align_face", quick),
        StageHandler(Stage.INPAINT, align_pb2.InpaintRequest, inpaint, "inpaint", quick),
        StageHandler(
            Stage.PREPARE_DATASET, align_pb2.PrepareDatasetRequest, prepare, "prepare_dataset", long
        ),
    ]
