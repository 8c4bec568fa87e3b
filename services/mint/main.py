"""Entry point of the minting service: ``ganfolk serve mint``."""

from __future__ import annotations

import grpc

from ganfolk.runtime.service import CoreHolder, ServiceDefinition
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import mint_pb2, mint_pb2_grpc
from services.mint import worker
from services.mint.config import MintSettings
from services.mint.core import Minter, load_minter
from services.mint.servicer import MintServicer


def add_servicers(
    server: grpc.aio.Server, holder: CoreHolder[Minter], store: ObjectStore, settings: MintSettings
) -> None:
    mint_pb2_grpc.add_MintServiceServicer_to_server(MintServicer(holder, store, settings), server)


SERVICE: ServiceDefinition[Minter] = ServiceDefinition(
    name="mint",
    settings_cls=MintSettings,
    grpc_services=[mint_pb2.DESCRIPTOR.services_by_name["MintService"].full_name],
    load=load_minter,
    add_servicers=add_servicers,
    stages=worker.stages,
    default_port=50067,
)
