"""Entry point of the finishing service: ``ganfolk serve upscale``."""

from __future__ import annotations

import grpc

from ganfolk.runtime.service import CoreHolder, ServiceDefinition
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import upscale_pb2, upscale_pb2_grpc
from services.upscale import worker
from services.upscale.config import UpscaleSettings
from services.upscale.core import Finisher, load_finisher
from services.upscale.servicer import UpscaleServicer


def add_servicers(
    server: grpc.aio.Server, holder: CoreHolder[Finisher], store: ObjectStore, settings: UpscaleSettings
) -> None:
    upscale_pb2_grpc.add_UpscaleServiceServicer_to_server(UpscaleServicer(holder, store, settings), server)


SERVICE: ServiceDefinition[Finisher] = ServiceDefinition(
    name="upscale",
    settings_cls=UpscaleSettings,
    grpc_services=[upscale_pb2.DESCRIPTOR.services_by_name["UpscaleService"].full_name],
    load=load_finisher,
    add_servicers=add_servicers,
    stages=worker.stages,
)
