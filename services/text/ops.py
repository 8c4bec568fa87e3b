"""Prompts, Name and Backstory on protobuf messages, shared by the gRPC servicer and the NATS stages.

Validation lives here so both adapters reject the same bad requests with the same words.
"""

from __future__ import annotations

import time
from typing import Any

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.models import model_ref, provenance
from ganfolk.runtime.protos import optional
from ganfolk.v1 import common_pb2, text_pb2
from services.text.config import TextSettings
from services.text.core import Outcome, TextCore, has_control_chars


def _text(value: str, field: str, limit: int) -> str:
    text = value.strip()
    if not text:
        raise InvalidArgument(f"{field} is empty")
    if len(text) > limit:
        raise InvalidArgument(f"{field} has {len(text)} characters, at most {limit}")
    if has_control_chars(text) or "\n" in text or "\t" in text:
        raise InvalidArgument(f"{field} contains control characters")
    return text


def _attempts(request: Any, settings: TextSettings) -> int:
    if not request.HasField("max_attempts") or request.max_attempts == 0:
        return settings.text_max_attempts
    if request.max_attempts > settings.text_max_attempts_limit:
        raise InvalidArgument(
            f"max_attempts {request.max_attempts} is above {settings.text_max_attempts_limit}"
        )
    return int(request.max_attempts)


def _seed(request: Any) -> int:
    return int(optional(request, "seed", time.time_ns() % 2**31))


def _provenance(
    core: TextCore, seed: int, outcome: Outcome, started: float, **params: Any
) -> common_pb2.Provenance:
    source = core.llm.base_url if core.llm else ""
    model = model_ref(core.model_name, source)
    parameters = {**params, "attempts": outcome.attempts, "llm_calls": outcome.llm_calls}
    return provenance("text", [model], parameters, started, seeds=[seed], fallbacks=outcome.fallbacks)


async def prompts(core: TextCore, request: text_pb2.PromptsRequest) -> text_pb2.PromptsResponse:
    limit = core.settings.text_max_prompts
    if request.count < 1:
        raise InvalidArgument("count must be at least 1")
    if request.count > limit:
        raise InvalidArgument(f"count {request.count} is above {limit} per request; split into tasks")
    seed = _seed(request)
    started = time.perf_counter()
    parts, outcome = await core.prompts(request.count, seed)
    response = text_pb2.PromptsResponse(
        prompts=[
            text_pb2.PortraitPrompt(
                text=p.text,
                medium=p.medium,
                adjective=p.adjective,
                nationality=p.nationality,
                person=p.person,
            )
            for p in parts
        ]
    )
    response.provenance.CopyFrom(_provenance(core, seed, outcome, started, count=request.count))
    return response


async def name(core: TextCore, request: text_pb2.NameRequest) -> text_pb2.NameResponse:
    description = _text(request.description, "description", core.settings.text_max_description_chars)
    attempts = _attempts(request, core.settings)
    seed = _seed(request)
    started = time.perf_counter()
    result = await core.name(description, seed, attempts)
    response = text_pb2.NameResponse(
        first_name=result.first,
        last_name=result.last,
        attempts=result.outcome.attempts,
        rejected=result.outcome.rejected,
    )
    response.provenance.CopyFrom(
        _provenance(core, seed, result.outcome, started, description=description, max_attempts=attempts)
    )
    return response


async def backstory(core: TextCore, request: text_pb2.BackstoryRequest) -> text_pb2.BackstoryResponse:
    settings = core.settings
    person = _text(request.name, "name", settings.text_max_name_chars)
    description = _text(request.description, "description", settings.text_max_description_chars)
    max_words = settings.text_backstory_max_words
    if request.HasField("max_words") and request.max_words != 0:
        max_words = int(request.max_words)
        if not 10 <= max_words <= settings.text_backstory_words_limit:
            raise InvalidArgument(f"max_words must be in [10, {settings.text_backstory_words_limit}]")
    seed = _seed(request)
    started = time.perf_counter()
    text, outcome = await core.backstory(person, description, seed, max_words)
    response = text_pb2.BackstoryResponse(backstory=text)
    response.provenance.CopyFrom(
        _provenance(core, seed, outcome, started, name=person, description=description, max_words=max_words)
    )
    return response
