"""gRPC adapter of the VQGAN+CLIP refinement service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ganfolk.runtime.service import CoreHolder
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import vqgan_pb2, vqgan_pb2_grpc
from services.vqgan import ops
from services.vqgan.config import VQGANSettings
from services.vqgan.core import VQGANCore


class VQGANServicer(vqgan_pb2_grpc.VQGANServiceServicer):
    def __init__(self, holder: CoreHolder[VQGANCore], store: ObjectStore, settings: VQGANSettings) -> None:
        self.holder = holder
        self.store = store
        self.settings = settings

    async def Refine(
        self, request: vqgan_pb2.RefineRequest, context: Any
    ) -> AsyncIterator[vqgan_pb2.RefineResponse]:
        """Refine an image towards the prompts: one message per iteration (snapshots on the asked
        iterations), then done=true with the final image. Cancelling the call stops the loop."""
        core = self.holder.get()
        # aclosing: a cancelled RPC closes the inner stream at once, which stops the loop.
        async with contextlib.aclosing(ops.refine_stream(core, self.store, request, self.settings)) as stream:
            async for reply in stream:
                yield reply
