"""Entry point of the minting service: ``ganfolk serve mint``."""

from __future__ import annotations

from pathlib import Path

import grpc

from ganfolk.runtime.service import CoreHolder, ServiceDefinition, SideProcess
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import mint_pb2, mint_pb2_grpc
from services.mint import worker
from services.mint.anvil import anvil_binary
from services.mint.config import MintSettings
from services.mint.core import Minter, load_minter
from services.mint.servicer import MintServicer


def add_servicers(
    server: grpc.aio.Server, holder: CoreHolder[Minter], store: ObjectStore, settings: MintSettings
) -> None:
    mint_pb2_grpc.add_MintServiceServicer_to_server(MintServicer(holder, store, settings), server)


def _anvil(port: int, state: Path) -> list[str]:
    # The chain's state is kept in the stack's folder, so tokens survive `ganfolk down`/`up`.
    return [
        *(anvil_binary(), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "31337"),
        *("--state", str(state / "chain.json")),
    ]


# Locally tokens are minted on an anvil dev chain; a deployment sets GANFOLK_MINT_RPC_URL.
DEV_CHAIN = SideProcess(
    name="anvil", setting="GANFOLK_MINT_RPC_URL", command=_anvil, url=lambda port: f"http://127.0.0.1:{port}"
)


SERVICE: ServiceDefinition[Minter] = ServiceDefinition(
    name="mint",
    settings_cls=MintSettings,
    grpc_services=[mint_pb2.DESCRIPTOR.services_by_name["MintService"].full_name],
    load=load_minter,
    add_servicers=add_servicers,
    stages=worker.stages,
    side_processes=[DEV_CHAIN],
)
