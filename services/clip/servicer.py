"""gRPC adapter of the CLIP service."""

from __future__ import annotations

from typing import Any

from ganfolk.runtime.service import CoreHolder
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import clip_pb2, clip_pb2_grpc
from services.clip import ops
from services.clip.config import ClipSettings
from services.clip.core import ClipCore


class ClipServicer(clip_pb2_grpc.ClipServiceServicer):
    def __init__(self, holder: CoreHolder[ClipCore], store: ObjectStore, settings: ClipSettings) -> None:
        self.holder = holder
        self.store = store
        self.settings = settings

    async def EmbedTexts(
        self, request: clip_pb2.EmbedTextsRequest, context: Any
    ) -> clip_pb2.EmbedTextsResponse:
        """L2-normalised text embeddings."""
        return await ops.embed_texts(self.holder.get(), request, self.settings)

    async def EmbedImages(
        self, request: clip_pb2.EmbedImagesRequest, context: Any
    ) -> clip_pb2.EmbedImagesResponse:
        """L2-normalised image embeddings; images by URI or inline."""
        return await ops.embed_images(self.holder.get(), self.store, request, self.settings)

    async def Rank(self, request: clip_pb2.RankRequest, context: Any) -> clip_pb2.RankResponse:
        """Score images (listed, or every image under a prefix) against weighted prompts, best first."""
        return await ops.rank(self.holder.get(), self.store, request, self.settings)
