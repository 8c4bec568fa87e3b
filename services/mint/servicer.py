"""gRPC adapter of the minting service."""

from __future__ import annotations

from typing import Any

from ganfolk.runtime.service import CoreHolder
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import mint_pb2, mint_pb2_grpc
from services.mint import ops
from services.mint.config import MintSettings
from services.mint.core import Minter


class MintServicer(mint_pb2_grpc.MintServiceServicer):
    def __init__(self, holder: CoreHolder[Minter], store: ObjectStore, settings: MintSettings) -> None:
        self.holder = holder
        self.store = store
        self.settings = settings

    async def Mint(self, request: mint_pb2.MintRequest, context: Any) -> mint_pb2.MintResponse:
        """Mint a portrait, exactly once per idempotency key."""
        return await ops.mint(self.holder.get(), self.store, request)

    async def GetToken(self, request: mint_pb2.GetTokenRequest, context: Any) -> mint_pb2.GetTokenResponse:
        """Read a token back (owner, URI, OpenSea metadata) by id or idempotency key."""
        return await ops.get_token(self.holder.get(), self.store, request)
