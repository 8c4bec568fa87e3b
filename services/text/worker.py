"""NATS adapter of the text service: the ``prompts``, ``name`` and ``backstory`` stages."""

from __future__ import annotations

from typing import Any

from ganfolk.runtime.catalog import Stage
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.storage import ObjectStore
from ganfolk.runtime.worker import StageHandler, TaskContext
from ganfolk.v1 import text_pb2
from services.text import ops
from services.text.config import TextSettings
from services.text.core import TextCore


def stages(core: TextCore, store: ObjectStore, settings: TextSettings) -> list[StageHandler[Any]]:
    async def prompt(request: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        return await ops.prompts(core, request)

    async def name(request: text_pb2.NameRequest, ctx: TaskContext) -> text_pb2.NameResponse:
        return await ops.name(core, request)

    async def backstory(request: text_pb2.BackstoryRequest, ctx: TaskContext) -> text_pb2.BackstoryResponse:
        return await ops.backstory(core, request)

    # LLM calls wait on the network, not on this CPU: several tasks at once. An endpoint that is
    # down fails a task as UNAVAILABLE after the client's retries; the task is nak'ed and retried.
    policy = StagePolicy(max_deliver=4, concurrency=4, max_ack_pending=64)
    return [
        StageHandler(Stage.PROMPTS, text_pb2.PromptsRequest, prompt, "prompts", policy),
        StageHandler(Stage.NAME, text_pb2.NameRequest, name, "name", policy),
        StageHandler(Stage.BACKSTORY, text_pb2.BackstoryRequest, backstory, "backstory", policy),
    ]
