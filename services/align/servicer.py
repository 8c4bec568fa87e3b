"""gRPC adapter of the align service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ganfolk.runtime.service import CoreHolder
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import align_pb2, align_pb2_grpc
from services.align import ops
from services.align.config import AlignSettings
from services.align.core import Aligner


class AlignServicer(align_pb2_grpc.AlignServiceServicer):
    def __init__(self, holder: CoreHolder[Aligner], store: ObjectStore, settings: AlignSettings) -> None:
        self.holder = holder
        self.store = store
        self.settings = settings

    async def AlignFace(
        self, request: align_pb2.AlignFaceRequest, context: Any
    ) -> align_pb2.AlignFaceResponse:
        """Detect and align faces; images and masks are stored, and returned inline when asked."""
        return await ops.align_face(self.holder.get(), self.store, request, self.settings)

    async def Inpaint(self, request: align_pb2.InpaintRequest, context: Any) -> align_pb2.InpaintResponse:
        """Fill the white area of a mask (LaMa when configured, else OpenCV Telea)."""
        return await ops.inpaint(self.holder.get(), self.store, request, self.settings)

    async def PrepareDataset(
        self, request: align_pb2.PrepareDatasetRequest, context: Any
    ) -> AsyncIterator[align_pb2.PrepareDatasetResponse]:
        """Align a folder or prefix of photos into a training set; streams progress per file."""
        async for message in ops.prepare_dataset(self.holder.get(), self.store, request, self.settings):
            yield message
