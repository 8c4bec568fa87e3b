"""Entry point of the text service: ``ganfolk serve text``."""

from __future__ import annotations

import grpc

from ganfolk.runtime.service import CoreHolder, ServiceDefinition
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import text_pb2, text_pb2_grpc
from services.text import worker
from services.text.config import TextSettings
from services.text.core import TextCore, load_core
from services.text.servicer import TextServicer


def add_servicers(
    server: grpc.aio.Server, holder: CoreHolder[TextCore], store: ObjectStore, settings: TextSettings
) -> None:
    text_pb2_grpc.add_TextServiceServicer_to_server(TextServicer(holder), server)


SERVICE: ServiceDefinition[TextCore] = ServiceDefinition(
    name="text",
    settings_cls=TextSettings,
    grpc_services=[text_pb2.DESCRIPTOR.services_by_name["TextService"].full_name],
    load=load_core,
    add_servicers=add_servicers,
    stages=worker.stages,
    default_port=50066,
)
