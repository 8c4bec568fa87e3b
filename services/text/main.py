"""Entry point of the text service: ``ganfolk serve text``."""

from __future__ import annotations

import sys

import grpc

from ganfolk.runtime.service import CoreHolder, ServiceDefinition, SideProcess
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


# Locally the text service talks to SmolLM2 served by llama.cpp in its own process; a
# deployment points GANFOLK_TEXT_LLM_BASE_URL at any OpenAI-compatible endpoint instead.
LOCAL_LLM = SideProcess(
    name="llm",
    setting="GANFOLK_TEXT_LLM_BASE_URL",
    command=lambda port, state: [sys.executable, "-m", "services.text.local_llm", "--port", str(port)],
    url=lambda port: f"http://127.0.0.1:{port}/v1",
    start_timeout_s=180.0,
)


SERVICE: ServiceDefinition[TextCore] = ServiceDefinition(
    name="text",
    settings_cls=TextSettings,
    grpc_services=[text_pb2.DESCRIPTOR.services_by_name["TextService"].full_name],
    load=load_core,
    add_servicers=add_servicers,
    stages=worker.stages,
    side_processes=[LOCAL_LLM],
)
