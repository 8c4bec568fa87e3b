"""Entry point of the VQGAN+CLIP refinement service: ``ganfolk serve vqgan``."""

from __future__ import annotations

import grpc

from ganfolk.runtime.service import CoreHolder, ServiceDefinition
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import vqgan_pb2, vqgan_pb2_grpc
from services.vqgan import worker
from services.vqgan.config import VQGANSettings
from services.vqgan.core import VQGANCore, load_core
from services.vqgan.servicer import VQGANServicer


def add_servicers(
    server: grpc.aio.Server, holder: CoreHolder[VQGANCore], store: ObjectStore, settings: VQGANSettings
) -> None:
    vqgan_pb2_grpc.add_VQGANServiceServicer_to_server(VQGANServicer(holder, store, settings), server)


SERVICE: ServiceDefinition[VQGANCore] = ServiceDefinition(
    name="vqgan",
    settings_cls=VQGANSettings,
    grpc_services=[vqgan_pb2.DESCRIPTOR.services_by_name["VQGANService"].full_name],
    load=load_core,
    add_servicers=add_servicers,
    stages=worker.stages,
)
