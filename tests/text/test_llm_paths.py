"""The openai client path against a scripted loopback endpoint: re-asks, retries, timeouts, outages."""

from __future__ import annotations

import time

import grpc
import pytest

from ganfolk.runtime.errors import FailedPrecondition, classify
from ganfolk.v1 import text_pb2, text_pb2_grpc
from services.text.config import TextSettings
from services.text.core import AnswersInvalid, TextCore
from services.text.llm import LLMClient, LLMUnavailable
from services.text.main import SERVICE
from services.text.notability import NotabilityChecker
from tests.fixtures.nats import free_port
from tests.fixtures.services import serving
from tests.text.conftest import Scripted


def make_core(
    notability: NotabilityChecker, base_url: str, retries: int = 2, timeout: float = 5.0, **settings: object
) -> TextCore:
    s = TextSettings(text_llm_base_url=base_url, **settings)  # type: ignore[arg-type]
    llm = LLMClient(base_url, "scripted", None, timeout=timeout, retries=retries, retry_wait=0.01)
    return TextCore(s, llm, notability)


async def test_name_reasked_while_notable_or_invalid(
    scripted: Scripted, notability: NotabilityChecker
) -> None:
    scripted.play("Claude Monet", "claude", "Sure! Here is a name", "Name: Lucien Faure.")
    result = await make_core(notability, scripted.base_url).name("a French painter", seed=1, max_attempts=5)
    assert (result.first, result.last) == ("Lucien", "Faure")
    assert result.outcome.attempts == 4 and len(scripted.requests) == 4
    assert result.outcome.rejected[0].startswith("notable: Claude Monet (WordNet: Claude Monet, French")
    assert all(r.startswith("invalid: ") for r in result.outcome.rejected[1:])
    assert not result.outcome.fallbacks
    # The request went out as an OpenAI chat completion with the description and a token cap.
    body = scripted.requests[0]
    assert body["model"] == "scripted" and body["max_tokens"] <= 16
    assert "a French painter" in body["messages"][-1]["content"]
    assert len({r["seed"] for r in scripted.requests}) == 4  # each re-ask samples differently


async def test_reasks_are_bounded_then_template_writer(
    scripted: Scripted, notability: NotabilityChecker
) -> None:
    scripted.play("Claude Monet")
    result = await make_core(notability, scripted.base_url).name("a French painter", seed=2, max_attempts=3)
    assert len(scripted.requests) == 3 and result.outcome.attempts == 3
    assert result.outcome.fallbacks == ["template-writer"]
    assert notability.check(f"{result.first} {result.last}") is None

    scripted.play("Claude Monet")
    strict = make_core(notability, scripted.base_url, text_template_fallback=False)
    with pytest.raises(AnswersInvalid, match="after 2 attempts") as err:
        await strict.name("a French painter", seed=2, max_attempts=2)
    assert classify(err.value).code == grpc.StatusCode.UNAVAILABLE


async def test_prompts_and_backstory_reasked(scripted: Scripted, notability: NotabilityChecker) -> None:
    core = make_core(notability, scripted.base_url, text_llm_concurrency=1)
    # Whatever subject the service picks, "oil painting of a Turkish boy" is invalid (no adjective) or
    # the wrong subject; the template writer then fills in, balanced and valid.
    scripted.play("Here are some prompts:", "oil painting of a Turkish boy")
    prompts, outcome = await core.prompts(2, seed=5, max_attempts=2)
    assert len(prompts) == 2 and len(scripted.requests) == 4
    assert outcome.fallbacks == ["template-writer"]
    assert prompts[0].nationality != prompts[1].nationality

    story = "Lucien Faure grew up above his father's bakery in Lyon. He paints the river every morning."
    scripted.play("As an AI language model I cannot do that.", "Lucien " + "very " * 80 + "long", story)
    text, outcome = await core.backstory("Lucien Faure", "a French painter", seed=1, max_words=40)
    assert text == story and outcome.attempts == 3


async def test_429_and_5xx_are_retried_then_succeed(
    scripted: Scripted, notability: NotabilityChecker
) -> None:
    scripted.play(429, 503, "Larissa Moura")
    result = await make_core(notability, scripted.base_url, retries=2).name("a Brazilian girl", seed=1)
    assert (result.first, result.last) == ("Larissa", "Moura")
    assert len(scripted.requests) == 3 and result.outcome.attempts == 1


async def test_retries_exhausted_is_unavailable(scripted: Scripted, notability: NotabilityChecker) -> None:
    scripted.play(500)
    with pytest.raises(LLMUnavailable, match="HTTP 500 after 3 attempts"):
        await make_core(notability, scripted.base_url, retries=2).name("a Brazilian girl", seed=1)
    assert len(scripted.requests) == 3


async def test_timeout_is_retried_then_unavailable(scripted: Scripted, notability: NotabilityChecker) -> None:
    scripted.play(("sleep", 1.5))
    started = time.perf_counter()
    with pytest.raises(LLMUnavailable, match="after 2 attempts"):
        await make_core(notability, scripted.base_url, retries=1, timeout=0.3).name(
            "a Brazilian girl", seed=1
        )
    assert len(scripted.requests) == 2 and time.perf_counter() - started < 3


async def test_bad_key_or_model_is_failed_precondition(
    scripted: Scripted, notability: NotabilityChecker
) -> None:
    scripted.play(401)
    with pytest.raises(FailedPrecondition, match="HTTP 401"):
        await make_core(notability, scripted.base_url).name("a Brazilian girl", seed=1)
    assert len(scripted.requests) == 1  # not retried


async def test_malformed_body_is_reasked(scripted: Scripted, notability: NotabilityChecker) -> None:
    scripted.play(("raw", '{"choices": []}'), "Larissa Moura")
    result = await make_core(notability, scripted.base_url).name("a Brazilian girl", seed=1)
    assert (result.first, result.last) == ("Larissa", "Moura") and result.outcome.attempts == 2


async def test_endpoint_down_is_unavailable_over_grpc(tmp_path) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    async with serving(
        SERVICE,
        worker_enabled=False,
        store_url=str(tmp_path),
        text_llm_base_url=down,
        text_llm_retries=2,
        text_llm_retry_wait_seconds=0.01,
    ) as (_, channel):
        stub = text_pb2_grpc.TextServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Name(text_pb2.NameRequest(description="a thoughtful Brazilian girl"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "unreachable after 3 attempts" in (err.value.details() or "")


async def test_no_endpoint_template_writer_over_grpc(tmp_path) -> None:
    async with serving(SERVICE, worker_enabled=False, store_url=str(tmp_path)) as (_, channel):
        stub = text_pb2_grpc.TextServiceStub(channel)
        reply = await stub.Prompts(text_pb2.PromptsRequest(count=16, seed=3))
        assert len({p.nationality for p in reply.prompts}) >= 8
        assert reply.provenance.fallbacks[0].startswith("template-writer")
        again = await stub.Prompts(text_pb2.PromptsRequest(count=16, seed=3))
        assert [p.text for p in again.prompts] == [p.text for p in reply.prompts]
        name = await stub.Name(text_pb2.NameRequest(description="a thoughtful Brazilian girl", seed=1))
        assert name.first_name and name.last_name and name.attempts == 0
        story = await stub.Backstory(
            text_pb2.BackstoryRequest(
                name=f"{name.first_name} {name.last_name}", description="a thoughtful Brazilian girl"
            )
        )
        assert name.first_name in story.backstory
