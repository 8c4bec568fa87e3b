"""NATS adapter of the minting service: the ``mint`` stage."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ganfolk.runtime.catalog import Stage
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.storage import ObjectStore
from ganfolk.runtime.worker import StageHandler, TaskCancelled, TaskContext
from ganfolk.v1 import mint_pb2
from services.mint import ops
from services.mint.chain import ReceiptUnknown
from services.mint.config import MintSettings
from services.mint.core import Minter

# Longest gap between two progress events of a running mint.
PROGRESS_EVERY_S = 30.0


def stages(minter: Minter, store: ObjectStore, settings: MintSettings) -> list[StageHandler[Any]]:
    every = min(settings.mint_receipt_timeout_s, PROGRESS_EVERY_S)

    async def handle(request: mint_pb2.MintRequest, ctx: TaskContext) -> mint_pb2.MintResponse:
        started = time.monotonic()
        doing, percent = "minting", 0.0

        async def report() -> None:
            # The mint blocks in a thread (publishing, then up to a receipt timeout per wait): a
            # progress event now and then tells the coordinator the stage is alive, since its
            # timeout counts from the last one. Every step of the thread is bounded, so this
            # never keeps a hung mint alive.
            while True:
                with contextlib.suppress(Exception):  # a lost report only shortens the deadline
                    await ctx.progress(percent, f"{doing} ({time.monotonic() - started:.0f}s)")
                await asyncio.sleep(every)

        reporter = asyncio.create_task(report())
        try:
            while True:
                try:
                    return await ops.mint(minter, store, request)
                except ReceiptUnknown as exc:
                    # Broadcast and still held by the node: the chain is slow, the mint has not
                    # failed. Giving up would fail the job while the transaction may still mine;
                    # instead the task follows the recorded transaction again (never signing
                    # another). One the node dropped is re-sent by that same follow-up; a node
                    # that cannot be asked fails the attempt.
                    if not await asyncio.to_thread(minter.chain.known, exc.tx_hash):
                        raise
                    if await ctx.cancelled():
                        raise TaskCancelled() from None
                    doing, percent = f"transaction {exc.tx_hash} is pending; waiting for it to be mined", 50.0
        finally:
            reporter.cancel()

    # Heartbeats hold the task through a receipt wait (it runs in a thread), so the default ack
    # wait only bounds how long a dead minter holds it; the redelivered task follows the recorded
    # transaction instead of minting again.
    policy = StagePolicy(
        max_deliver=6,
        retry_delays=(5.0, 15.0, 30.0, 60.0, 120.0),
        concurrency=4,
        max_ack_pending=32,
    )
    return [StageHandler(Stage.MINT, mint_pb2.MintRequest, handle, "mint", policy)]
