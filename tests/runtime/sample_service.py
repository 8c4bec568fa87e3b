"""A minimal service on the shared runtime, used to test the runtime in a real process.

It serves the text service's proto with a trivial core (no model), so health, signals,
worker delivery and shutdown can be exercised without any ML dependency. Knobs come
from environment variables so tests can run it as ``python -m tests.runtime.sample_service``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import grpc

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.service import CoreHolder, ServiceDefinition, run_service
from ganfolk.runtime.settings import Settings, load_settings
from ganfolk.runtime.storage import ObjectStore
from ganfolk.runtime.worker import StageHandler, TaskContext
from ganfolk.v1 import text_pb2, text_pb2_grpc


class Core:
    def __init__(self) -> None:
        self.work_seconds = float(os.environ.get("SAMPLE_WORK_SECONDS", "0"))
        self.calls_file = os.environ.get("SAMPLE_CALLS_FILE")

    def prompts(self, count: int) -> text_pb2.PromptsResponse:
        if count <= 0:
            raise InvalidArgument("count must be at least 1")
        return text_pb2.PromptsResponse(
            prompts=[text_pb2.PortraitPrompt(text=f"prompt {i}") for i in range(count)]
        )


class Servicer(text_pb2_grpc.TextServiceServicer):
    def __init__(self, holder: CoreHolder[Core]) -> None:
        self.holder = holder

    async def Prompts(self, request: text_pb2.PromptsRequest, context: Any) -> text_pb2.PromptsResponse:
        return self.holder.get().prompts(request.count)


def load(settings: Settings) -> Core:
    time.sleep(float(os.environ.get("SAMPLE_LOAD_SECONDS", "0")))
    return Core()


def stages(core: Core, store: ObjectStore, settings: Settings) -> list[StageHandler[Any]]:
    async def handle(request: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        if core.calls_file:
            with Path(core.calls_file).open("a") as f:
                f.write(f"{ctx.meta.task_id} {ctx.attempt} {os.getpid()}\n")
        await asyncio.sleep(core.work_seconds)
        return core.prompts(request.count)

    policy = StagePolicy(
        ack_wait=float(os.environ.get("SAMPLE_ACK_WAIT", "2")),
        max_deliver=int(os.environ.get("SAMPLE_MAX_DELIVER", "3")),
        retry_delays=(0.2,),
        fetch_timeout=0.5,
    )
    return [
        StageHandler(
            os.environ.get("SAMPLE_STAGE", "sample-test"), text_pb2.PromptsRequest, handle, "prompts", policy
        )
    ]


def add_servicers(
    server: grpc.aio.Server, holder: CoreHolder[Core], store: ObjectStore, settings: Settings
) -> None:
    text_pb2_grpc.add_TextServiceServicer_to_server(Servicer(holder), server)


SERVICE: ServiceDefinition[Core] = ServiceDefinition(
    name="sample",
    settings_cls=Settings,
    grpc_services=["ganfolk.v1.TextService"],
    load=load,
    add_servicers=add_servicers,
    stages=stages,
)

if __name__ == "__main__":
    asyncio.run(run_service(SERVICE, load_settings(Settings, service="sample")))
