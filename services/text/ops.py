"""Prompts, Name and Backstory on protobuf messages, shared by the gRPC servicer and the NATS stages.

Validation lives here so both adapters reject the same bad requests with the same words.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from google.protobuf.json_format import MessageToDict

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.models import model_ref, provenance
from ganfolk.runtime.protos import optional
from ganfolk.v1 import common_pb2, text_pb2
from services.text.config import TextSettings
from services.text.core import (
    GENDER_WORDS,
    Outcome,
    PromptParts,
    TextCore,
    full_name_key,
    has_control_chars,
)
from services.text.filters import parse_filter
from services.text.notability import OFFLINE_ONLY

# Bound on a request's excluded names, so that a request cannot make the service do unbounded work.
MAX_EXCLUDED_NAMES = 1000


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
    fallbacks = list(outcome.fallbacks)
    if OFFLINE_ONLY in outcome.notes and OFFLINE_ONLY not in fallbacks:
        fallbacks.append(OFFLINE_ONLY)
    if outcome.notes:
        parameters["notes"] = list(outcome.notes)
    return provenance("text", [model], parameters, started, seeds=[seed], fallbacks=fallbacks)


def _portrait(p: PromptParts) -> text_pb2.PortraitPrompt:
    person = p.subject
    return text_pb2.PortraitPrompt(
        text=p.text,
        medium=p.medium,
        adjective=p.adjective,
        nationality=p.nationality,
        person=p.person,
        country_code=p.country.code,
        gender=GENDER_WORDS[person.gender],
        age_group=person.age_group,
        first_name=p.first_name,
        last_name=p.last_name,
    )


async def prompts(core: TextCore, request: text_pb2.PromptsRequest) -> text_pb2.PromptsResponse:
    limit = core.settings.text_max_prompts
    if request.count < 1:
        raise InvalidArgument("count must be at least 1")
    if request.count > limit:
        raise InvalidArgument(f"count {request.count} is above {limit} per request; split into tasks")
    wanted = parse_filter(request.filter)
    seed = _seed(request)
    started = time.perf_counter()
    parts, outcome = await core.prompts(request.count, seed, wanted=wanted, with_names=request.with_names)
    response = text_pb2.PromptsResponse(prompts=[_portrait(p) for p in parts])
    params: dict[str, Any] = {"count": request.count, "with_names": request.with_names}
    if request.HasField("filter"):
        params["filter"] = MessageToDict(request.filter, preserving_proto_field_name=True)
    if request.with_names:
        # Counts by kind ("misfit", "notable", "duplicate", "invalid"), not the answers
        # themselves: this provenance goes into the collection's job entry, which stays small.
        params["rejected"] = dict(Counter(r.split(":")[0] for r in outcome.rejected))
    response.provenance.CopyFrom(_provenance(core, seed, outcome, started, **params))
    return response


async def name(core: TextCore, request: text_pb2.NameRequest) -> text_pb2.NameResponse:
    description = _text(request.description, "description", core.settings.text_max_description_chars)
    attempts = _attempts(request, core.settings)
    if len(request.exclude_names) > MAX_EXCLUDED_NAMES:
        raise InvalidArgument(
            f"exclude_names has {len(request.exclude_names)} names, at most {MAX_EXCLUDED_NAMES}"
        )
    exclude = {full_name_key(n) for n in request.exclude_names if n.strip()}
    reserved = ""
    if request.reserved_name:
        reserved = _text(request.reserved_name, "reserved_name", core.settings.text_max_name_chars)
    seed = _seed(request)
    started = time.perf_counter()
    result = await core.name(description, seed, attempts, exclude=exclude, reserved=reserved)
    response = text_pb2.NameResponse(
        first_name=result.first,
        last_name=result.last,
        attempts=result.outcome.attempts,
        rejected=result.outcome.rejected,
    )
    if result.subject is not None:
        response.country_code = result.subject.country.code
        response.gender = GENDER_WORDS[result.subject.gender]
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
