"""A collection's filter (nationalities or regions, age groups, genders, media), checked.

Light on purpose (tables only, no LLM client): the coordinator checks a submitted collection's
filter with it, so that a bad value is INVALID_ARGUMENT at Submit and not a failed job later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ganfolk.runtime.errors import InvalidArgument
from services.text import guard
from services.text.countries import resolve
from services.text.persons import age_group, gender_code

# Head words a medium must contain: the rendering technique or the kind of picture.
MEDIUM_WORDS: frozenset[str] = frozenset(
    "sketch drawing painting portrait photograph photo watercolor watercolour pastel etching engraving "
    "lithograph woodcut linocut illustration study mosaic fresco gouache tempera print miniature caricature "
    "pencil charcoal ink oil acrylic crayon silhouette daguerreotype tintype collage render rendering "
    "picture image sculpture bust".split()
)
# Bounds on a filter's lists, so that a request cannot make the service do unbounded work.
MAX_FILTER_VALUES = 120
MAX_VALUE_CHARS = 60
_CONTROL = frozenset(map(chr, [*range(0, 32), *range(127, 160)]))


@dataclass(frozen=True)
class CollectionFilter:
    """The countries, age groups, genders ("m"/"f") and media a collection covers; empty: all."""

    countries: tuple[str, ...] = ()
    age_groups: tuple[str, ...] = ()
    genders: tuple[str, ...] = ()
    media: tuple[str, ...] = ()


NO_FILTER = CollectionFilter()


def check_medium(medium: str) -> str:
    """A collection's medium in lower case; ValueError says what a medium needs."""
    text = " ".join(medium.lower().split())
    if not text or len(text.split()) > 4:
        raise ValueError(f"medium {medium!r} must be one to four words, e.g. 'charcoal sketch'")
    if not MEDIUM_WORDS & set(text.replace("-", " ").split()):
        examples = ", ".join(sorted(MEDIUM_WORDS)[:8])
        raise ValueError(f"medium {medium!r} names no technique; use a word such as {examples}")
    # A medium goes into the LLM's prompt and the portrait's own prompt: words, not orders.
    if guard.INSTRUCTION_WORDS & set(text.split()) or guard.clean_user_text(text).removed:
        raise ValueError(f"medium {medium!r} reads like an instruction, not a technique")
    return text


def _values(values: Any, field: str) -> list[str]:
    items = [str(v).strip() for v in values if str(v).strip()]
    if len(items) > MAX_FILTER_VALUES:
        raise ValueError(f"{field} has {len(items)} values, at most {MAX_FILTER_VALUES}")
    for item in items:
        if len(item) > MAX_VALUE_CHARS or _CONTROL & set(item):
            raise ValueError(
                f"{field} value {item[:MAX_VALUE_CHARS]!r} is too long or has control characters"
            )
    return items


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_filter(message: Any) -> CollectionFilter:
    """The ``ganfolk.v1.CollectionFilter`` message checked; InvalidArgument names the value to fix
    and what would be accepted."""
    try:
        countries: list[str] = []
        for value in _values(message.nationalities, "nationalities"):
            countries.extend(resolve(value))
        ages = [age_group(v) for v in _values(message.age_groups, "age_groups")]
        genders = [gender_code(v) for v in _values(message.genders, "genders")]
        media = [check_medium(v) for v in _values(message.media, "media")]
    except ValueError as exc:
        raise InvalidArgument(f"collection filter: {exc}") from exc
    return CollectionFilter(_unique(countries), _unique(ages), _unique(genders), _unique(media))
