"""The text service over gRPC and NATS against the real local LLM (SmolLM2-135M on xllamacpp)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from nats.aio.client import Client as NATS

from ganfolk.runtime import jetstream
from ganfolk.v1 import common_pb2, events_pb2, text_pb2
from services.text.core import parse_name, parse_prompt
from services.text.local_llm import LocalLLM
from services.text.main import SERVICE
from services.text.notability import NotabilityChecker
from tests.fixtures.nats import NatsServer
from tests.fixtures.services import serving


async def test_prompts_from_the_real_model(text_stub: Any) -> None:
    reply = await text_stub.Prompts(text_pb2.PromptsRequest(count=1, seed=11), timeout=240)
    assert len(reply.prompts) == 1
    for p in reply.prompts:
        parts = parse_prompt(p.text)
        assert (parts.medium, parts.adjective, parts.nationality, parts.person) == (
            p.medium,
            p.adjective,
            p.nationality,
            p.person,
        )
    assert reply.provenance.models[0].name == "smollm2-135m-instruct"
    assert reply.provenance.parameters["attempts"] >= 1


async def test_name_from_the_real_model(text_stub: Any, notability: NotabilityChecker) -> None:
    reply = await text_stub.Name(text_pb2.NameRequest(description="a French painter", seed=4), timeout=240)
    assert parse_name(f"{reply.first_name} {reply.last_name}") == (reply.first_name, reply.last_name)
    assert notability.check(f"{reply.first_name} {reply.last_name}") is None
    assert 1 <= reply.attempts <= 2
    # Either an answer passed (the rejections before it are listed), or none did and the template
    # writer named a French person.
    templated = "template-writer" in reply.provenance.fallbacks
    assert len(reply.rejected) == reply.attempts - (0 if templated else 1)
    assert reply.country_code == "FR"


async def test_backstory_from_the_real_model(text_stub: Any) -> None:
    request = text_pb2.BackstoryRequest(
        name="Sophia Santos", description="a thoughtful Brazilian girl", max_words=20, seed=2
    )
    reply = await text_stub.Backstory(request, timeout=240)
    assert 0 < len(reply.backstory.split()) <= 20
    assert "Sophia" in reply.backstory or "Santos" in reply.backstory or reply.provenance.fallbacks


@pytest.mark.parametrize(
    ("method", "request_", "message"),
    [
        ("Prompts", text_pb2.PromptsRequest(count=0), "count must be at least 1"),
        ("Prompts", text_pb2.PromptsRequest(count=101), "count 101 is above 100"),
        ("Name", text_pb2.NameRequest(description="  "), "description is empty"),
        ("Name", text_pb2.NameRequest(description="a girl " * 80), "at most 500"),
        ("Name", text_pb2.NameRequest(description="a girl\x07\x1b[2J"), "control characters"),
        ("Name", text_pb2.NameRequest(description="a girl", max_attempts=99), "max_attempts 99"),
        ("Backstory", text_pb2.BackstoryRequest(name="", description="a girl"), "name is empty"),
        ("Backstory", text_pb2.BackstoryRequest(name="A B", description="a girl", max_words=5), "max_words"),
        ("Backstory", text_pb2.BackstoryRequest(name="A\nB", description="a girl"), "control characters"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    text_stub: Any, method: str, request_: Any, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(text_stub, method)(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


async def test_name_stage_through_nats(
    nc: NATS, nats_server: NatsServer, local_llm: LocalLLM, tmp_path
) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"
    events = await nc.subscribe(jetstream.event_subject(job))
    async with serving(
        SERVICE,
        nats_url=nats_server.url,
        store_url=str(tmp_path),
        text_llm_base_url=local_llm.base_url,
        text_llm_timeout_seconds=120,
        text_max_attempts=2,
    ):
        meta = common_pb2.TaskMeta(job_id=job, task_id=f"{job}.name", stage="name")
        task = text_pb2.NameRequest(description="a cheerful Kenyan grandmother", seed=5, meta=meta)
        await jetstream.publish_task(nc.jetstream(), "name", task.SerializeToString(), meta.task_id)
        while True:
            event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=240)).data)
            if event.WhichOneof("outcome") == "result":
                break
            assert event.WhichOneof("outcome") != "failure", event
    name = event.result.name
    assert event.meta.task_id == meta.task_id and event.meta.stage == "name"
    assert parse_name(f"{name.first_name} {name.last_name}")
    info = await nc.jetstream().consumer_info(jetstream.TASKS_STREAM, jetstream.consumer_name("name"))
    assert info.num_pending == 0 and info.num_ack_pending == 0
    await asyncio.sleep(0)
