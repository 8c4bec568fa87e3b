"""gRPC adapter of the finishing service."""

from __future__ import annotations

from typing import Any

from ganfolk.runtime.service import CoreHolder
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import upscale_pb2, upscale_pb2_grpc
from services.upscale import ops
from services.upscale.config import UpscaleSettings
from services.upscale.core import Finisher


class UpscaleServicer(upscale_pb2_grpc.UpscaleServiceServicer):
    def __init__(self, holder: CoreHolder[Finisher], store: ObjectStore, settings: UpscaleSettings) -> None:
        self.holder = holder
        self.store = store
        self.settings = settings

    async def Finish(self, request: upscale_pb2.FinishRequest, context: Any) -> upscale_pb2.FinishResponse:
        """Vignette, unsharp, noise and 4x super-resolution of one image."""
        return await ops.finish(self.holder.get(), self.store, request, self.settings)
