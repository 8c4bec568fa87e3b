"""Token and collection metadata in OpenSea's metadata standard, from a mint request.

Field names follow https://docs.opensea.io/docs/metadata-standards: a token has ``name``,
``description``, ``image``, ``external_url``, ``attributes`` (``trait_type``/``value``, with
``display_type: number`` for numbers) and ``background_color``; the collection at
``contractURI()`` has ``name``, ``description``, ``image``, ``external_link``,
``seller_fee_basis_points`` and ``fee_recipient``. :data:`TOKEN_SCHEMA` and
:data:`COLLECTION_SCHEMA` state those fields as JSON Schema; the tests validate against them.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.v1 import common_pb2

log = logging.getLogger(__name__)

_HEX_COLOUR = re.compile(r"^[0-9a-fA-F]{6}$")
_NAME_FIELDS = {"token_id", "name", "title"}

_ATTRIBUTE = {
    "type": "object",
    "required": ["trait_type", "value"],
    "properties": {
        "trait_type": {"type": "string", "minLength": 1},
        "value": {"type": ["string", "number"]},
        "display_type": {"enum": ["number", "boost_number", "boost_percentage", "date"]},
    },
    "additionalProperties": False,
}
TOKEN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "OpenSea token metadata",
    "type": "object",
    "required": ["name", "description", "image", "attributes"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "image": {
            "type": "string",
            "pattern": "^(ipfs://[a-z2-7]+|ipfs://Qm[1-9A-HJ-NP-Za-km-z]{44}|https?://.+|file://.+|s3://.+)$",
        },
        "external_url": {"type": "string", "pattern": "^https?://"},
        "background_color": {"type": "string", "pattern": "^[0-9a-fA-F]{6}$"},
        "attributes": {"type": "array", "items": _ATTRIBUTE},
    },
    "additionalProperties": False,
}
COLLECTION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "OpenSea collection metadata (contractURI)",
    "type": "object",
    "required": ["name", "description", "seller_fee_basis_points", "fee_recipient"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "image": {"type": "string"},
        "external_link": {"type": "string", "pattern": "^https?://"},
        "seller_fee_basis_points": {"type": "integer", "minimum": 0, "maximum": 10000},
        "fee_recipient": {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"},
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Traits:
    """Who the portrait shows, from the prompt's parse."""

    nationality: str = ""
    age: str = ""
    gender: str = ""
    medium: str = ""
    adjective: str = ""

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in vars(self).items() if v]


_GENDER_WORDS = {"f": "female", "m": "male"}


def parse_traits(prompt: str) -> Traits:
    """The traits of a prompt in the article's grammar; empty when the prompt is free-form.

    Parsed with the text service's own grammar (the one that writes the prompts), so the
    nationalities and person words are the same lists.
    """
    if not prompt.strip():
        return Traits()
    from services.text.core import parse_prompt
    from services.text.persons import PERSONS

    try:
        parts = parse_prompt(prompt)
    except ValueError:
        return Traits()
    person = PERSONS.get(parts.person.lower())
    return Traits(
        nationality=parts.nationality,
        age=person.age_group if person else "",
        gender=_GENDER_WORDS.get(person.gender, person.gender) if person else "",
        medium=parts.medium,
        adjective=parts.adjective,
    )


def _params(prov: common_pb2.Provenance) -> dict[str, Any]:
    params: dict[str, Any] = MessageToDict(prov.parameters) if prov.HasField("parameters") else {}
    return params


@dataclass(frozen=True)
class Making:
    """What the provenance says about how the portrait was made (for attributes and the gate)."""

    generator: common_pb2.ModelRef | None
    seed: int | None
    refine_iterations: int | None
    upscaler: str
    services: frozenset[str]


def read_provenance(provenance: Sequence[common_pb2.Provenance], seed: int | None) -> Making:
    """Generator model, seed, refine iterations and upscaler from a job's provenance records."""
    generator = None
    seeds: set[int] = set()
    iterations = None
    upscaler = ""
    for prov in provenance:
        if prov.service == "stylegan":
            if prov.models and generator is None:
                generator = prov.models[0]
            seeds.update(prov.seeds)
        elif prov.service == "vqgan":
            value = _params(prov).get("iterations")
            if isinstance(value, int | float):
                iterations = int(value)
        elif prov.service == "upscale":
            backend = str(_params(prov).get("backend", ""))
            models = [m.name for m in prov.models if m.name]
            upscaler = " ".join(
                filter(None, [models[0] if models else "", f"({backend})" if backend else ""])
            )
            upscaler = upscaler or ", ".join(prov.fallbacks)
    if seed is None and len(seeds) == 1:
        seed = next(iter(seeds))  # only one sample was drawn: it is the portrait's
    services = frozenset(p.service for p in provenance)
    return Making(generator, seed, iterations, upscaler, services)


def _dedupe(pairs: Iterable[tuple[str, Any, str]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for trait, value, display in pairs:
        if trait.lower() in seen or value in ("", None):
            continue
        seen.add(trait.lower())
        item: dict[str, Any] = {"trait_type": trait, "value": value}
        if display:
            item["display_type"] = display
        out.append(item)
    return out


def check_name_pattern(pattern: str) -> None:
    """A token name pattern uses only {token_id}, {name} and {title}; ValueError otherwise."""
    import string

    fields = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    unknown = fields - _NAME_FIELDS
    if unknown:
        raise ValueError(
            f"name pattern {pattern!r} uses {sorted(unknown)}; only {sorted(_NAME_FIELDS)} exist"
        )


def check_colour(colour: str) -> str:
    """A background colour as OpenSea wants it (six hex digits, no '#'); InvalidArgument otherwise."""
    value = colour.strip().removeprefix("#")
    if value and not _HEX_COLOUR.match(value):
        raise InvalidArgument(f"background_color {colour!r} is not six hex digits")
    return value.lower()


def token_metadata(
    *,
    token_id: int,
    name_pattern: str,
    title: str,
    person_name: str,
    prompt: str,
    backstory: str,
    image_uri: str,
    traits: Traits,
    making: Making,
    attributes: Sequence[tuple[str, str]],
    external_url_base: str,
    idempotency_key: str,
    background_color: str,
) -> dict[str, Any]:
    """The token's OpenSea metadata JSON object."""
    name = name_pattern.format(token_id=token_id, name=person_name or title, title=title)
    description = backstory.strip()
    if prompt.strip():
        # The prompt is what the portrait was made from: collectors read it with the story.
        description = (
            f"{description}\n\nPrompt: {prompt.strip()}" if description else f"Prompt: {prompt.strip()}"
        )
    generator = making.generator
    pairs: list[tuple[str, Any, str]] = [(t, v, "") for t, v in attributes]
    pairs += [(t, v, "") for t, v in traits.items()]
    pairs.append(("prompt", prompt.strip(), ""))
    if generator is not None:
        pairs.append(("generator", generator.name, ""))
        pairs.append(("generator sha256", generator.sha256, ""))
    if making.seed is not None:
        pairs.append(("seed", making.seed, "number"))
    if making.refine_iterations is not None:
        pairs.append(("refine iterations", making.refine_iterations, "number"))
    pairs.append(("upscaler", making.upscaler, ""))
    metadata: dict[str, Any] = {
        "name": name,
        "description": description,
        "image": image_uri,
        "attributes": _dedupe(pairs),
    }
    if external_url_base:
        quoted = urllib.parse.quote(idempotency_key, safe="")
        metadata["external_url"] = f"{external_url_base.rstrip('/')}/{quoted}"
    if background_color:
        metadata["background_color"] = background_color
    return metadata


def collection_metadata(
    *,
    name: str,
    description: str,
    image_uri: str,
    external_link: str,
    royalty_bps: int,
    fee_recipient: str,
) -> dict[str, Any]:
    """The collection's metadata JSON object (what ``contractURI()`` points at)."""
    if not 0 <= royalty_bps <= 10_000:
        raise InvalidArgument(f"royalty {royalty_bps} basis points is outside 0..10000")
    metadata: dict[str, Any] = {
        "name": name,
        "description": description,
        "seller_fee_basis_points": royalty_bps,
        "fee_recipient": fee_recipient,
    }
    if image_uri:
        metadata["image"] = image_uri
    if external_link:
        metadata["external_link"] = external_link
    return metadata


def encode(metadata: dict[str, Any]) -> bytes:
    """Canonical bytes of a metadata object: the same object always has the same CID."""
    return json.dumps(metadata, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
