"""Entry point of the CLIP scoring service: ``ganfolk serve clip``."""

from __future__ import annotations

import grpc

from ganfolk.runtime.service import CoreHolder, ServiceDefinition
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import clip_pb2, clip_pb2_grpc
from services.clip import worker
from services.clip.config import ClipSettings
from services.clip.core import ClipCore, load_core
from services.clip.servicer import ClipServicer


def add_servicers(
    server: grpc.aio.Server, holder: CoreHolder[ClipCore], store: ObjectStore, settings: ClipSettings
) -> None:
    clip_pb2_grpc.add_ClipServiceServicer_to_server(ClipServicer(holder, store, settings), server)


SERVICE: ServiceDefinition[ClipCore] = ServiceDefinition(
    name="clip",
    settings_cls=ClipSettings,
    grpc_services=[clip_pb2.DESCRIPTOR.services_by_name["ClipService"].full_name],
    load=load_core,
    add_servicers=add_servicers,
    stages=worker.stages,
    stop=lambda core: core.aclose(),
)
