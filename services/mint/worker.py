"""NATS adapter of the minting service: the ``mint`` stage."""

from __future__ import annotations

from typing import Any

from ganfolk.runtime.catalog import Stage
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.storage import ObjectStore
from ganfolk.runtime.worker import StageHandler, TaskContext
from ganfolk.v1 import mint_pb2
from services.mint import ops
from services.mint.config import MintSettings
from services.mint.core import Minter


def stages(minter: Minter, store: ObjectStore, settings: MintSettings) -> list[StageHandler[Any]]:
    async def handle(request: mint_pb2.MintRequest, ctx: TaskContext) -> mint_pb2.MintResponse:
        return await ops.mint(minter, store, request)

    # A receipt may take minutes on a busy chain; a timed-out receipt is a transient failure
    # and the redelivered task follows the recorded transaction instead of minting again.
    policy = StagePolicy(
        ack_wait=max(60.0, settings.mint_receipt_timeout_s * 1.5),
        max_deliver=6,
        retry_delays=(5.0, 15.0, 30.0, 60.0, 120.0),
        concurrency=4,
        max_ack_pending=32,
    )
    return [StageHandler(Stage.MINT, mint_pb2.MintRequest, handle, "mint", policy)]
