"""Entry point of the align service: ``ganfolk serve align``."""

from __future__ import annotations

import grpc

from ganfolk.runtime.service import CoreHolder, ServiceDefinition
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import align_pb2, align_pb2_grpc
from services.align import worker
from services.align.config import AlignSettings
from services.align.core import Aligner, load_aligner
from services.align.servicer import AlignServicer


def add_servicers(
    server: grpc.aio.Server, holder: CoreHolder[Aligner], store: ObjectStore, settings: AlignSettings
) -> None:
    align_pb2_grpc.add_AlignServiceServicer_to_server(AlignServicer(holder, store, settings), server)


SERVICE: ServiceDefinition[Aligner] = ServiceDefinition(
    name="align",
    settings_cls=AlignSettings,
    grpc_services=[align_pb2.DESCRIPTOR.services_by_name["AlignService"].full_name],
    load=load_aligner,
    add_servicers=add_servicers,
    stages=worker.stages,
)
