"""gRPC adapter of the StyleGAN2 service."""

from __future__ import annotations

from typing import Any

from ganfolk.runtime.service import CoreHolder
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import stylegan_pb2, stylegan_pb2_grpc
from services.stylegan import ops
from services.stylegan.config import StyleGANSettings
from services.stylegan.core import Sampler


class StyleGANServicer(stylegan_pb2_grpc.StyleGANServiceServicer):
    def __init__(self, holder: CoreHolder[Sampler], store: ObjectStore, settings: StyleGANSettings) -> None:
        self.holder = holder
        self.store = store
        self.settings = settings

    async def Sample(self, request: stylegan_pb2.SampleRequest, context: Any) -> stylegan_pb2.SampleResponse:
        """Sample images for seeds; they are stored, and returned inline when asked."""
        return await ops.sample(self.holder.get(), self.store, request, self.settings)
