"""gRPC adapter of the text service."""

from __future__ import annotations

from typing import Any

from ganfolk.runtime.service import CoreHolder
from ganfolk.v1 import text_pb2, text_pb2_grpc
from services.text import ops
from services.text.core import TextCore


class TextServicer(text_pb2_grpc.TextServiceServicer):
    def __init__(self, holder: CoreHolder[TextCore]) -> None:
        self.holder = holder

    async def Prompts(self, request: text_pb2.PromptsRequest, context: Any) -> text_pb2.PromptsResponse:
        """Portrait prompts ("charcoal sketch of an inquisitive Turkish boy") with their parts."""
        return await ops.prompts(self.holder.get(), request)

    async def Name(self, request: text_pb2.NameRequest, context: Any) -> text_pb2.NameResponse:
        """A first and last name for a description; never a notable person's name."""
        return await ops.name(self.holder.get(), request)

    async def Backstory(self, request: text_pb2.BackstoryRequest, context: Any) -> text_pb2.BackstoryResponse:
        """A brief backstory within the word limit."""
        return await ops.backstory(self.holder.get(), request)
