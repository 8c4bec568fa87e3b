"""Text core: portrait prompts, names and backstories. No gRPC or NATS here.

Every LLM answer is parsed and validated, and re-asked a bounded number of times while it is
invalid (or, for names, while it is notable, does not fit the person's country and gender, or
repeats another name of the collection). The template writer is the last fallback: with no
endpoint configured, or when the answers stay invalid; it is deterministic per seed and recorded
in the provenance as a fallback.

Prompts are balanced: the service picks each portrait's country (round-robin over world
regions), age group and gender, within a collection's filters, so that N portraits spread
across them (the article saw a bias towards European faces); the LLM picks the adjective, and
the medium unless the collection fixes the media.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ganfolk.runtime.errors import Transient
from ganfolk.runtime.models import fetch_weights
from ganfolk.runtime.settings import ConfigError
from services.text import guard
from services.text.config import TextSettings
from services.text.countries import COUNTRIES, REGIONS, Country, find_country, find_group
from services.text.filters import MEDIUM_WORDS, NO_FILTER, CollectionFilter
from services.text.llm import LLMClient, Message
from services.text.names import CURATED, NOT_NAMES, NameSource
from services.text.notability import (
    OFFLINE_ONLY,
    NotabilityChecker,
    Verdict,
    name_keys,
    normalize,
    read_name_list,
)
from services.text.persons import AGE_GROUPS, AGE_YEARS, CYCLE, PERSONS, PersonWord, find_person

log = logging.getLogger(__name__)
T = TypeVar("T")

# --------------------------------------------------------------------------- curated lists

MEDIA: tuple[str, ...] = (
    "charcoal sketch", "oil painting", "watercolor painting", "pencil drawing", "pastel portrait",
    "ink drawing", "gouache painting", "acrylic painting", "woodcut print", "studio photograph",
    "etching", "tempera painting",
)  # fmt: skip
ADJECTIVES: tuple[str, ...] = (
    "inquisitive", "thoughtful", "cheerful", "serene", "determined", "playful", "wise", "shy", "proud",
    "curious", "gentle", "confident", "dreamy", "mischievous", "kind", "stoic", "joyful", "pensive",
)  # fmt: skip
NOT_ADJECTIVES: frozenset[str] = frozenset("a an the of and with in on portrait prompt".split())
REFUSALS = ("as an ai", "i'm sorry", "i am sorry", "i cannot", "i can't", "language model")
GENDER_WORDS = {"m": "male", "f": "female", "": ""}

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAME_WORD = re.compile(r"^[^\W\d_]+(?:['’-][^\W\d_]+)*$")


def has_control_chars(text: str) -> bool:
    return bool(_CONTROL.search(text))


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def full_name_key(name: str) -> str:
    """What two names must differ in to count as two names within a collection: first and
    last name, ignoring case, accents, middle names and suffixes."""
    keys = name_keys(name)
    return keys[-1] if keys else normalize(name)


def name_key(first: str, last: str) -> str:
    return full_name_key(f"{first} {last}")


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptParts:
    medium: str
    adjective: str
    nationality: str  # as written: "English", "Québécois"
    person: str
    first_name: str = ""
    last_name: str = ""

    @property
    def text(self) -> str:
        return f"{self.medium} of {article(self.adjective)} {self.adjective} {self.nationality} {self.person}"

    @property
    def description(self) -> str:
        """Who the prompt shows: "an inquisitive Turkish boy"."""
        return f"{article(self.adjective)} {self.adjective} {self.nationality} {self.person}"

    @property
    def country(self) -> Country:
        found = find_country(self.nationality)
        assert found is not None, self.nationality
        return found[0]

    @property
    def subject(self) -> PersonWord:
        return PERSONS[self.person]


@dataclass(frozen=True)
class Plan:
    """One portrait of a collection as the service chose it: who, and the medium if fixed."""

    country: Country
    person: str
    medium: str | None = None


def _alternation(words: Sequence[str]) -> str:
    return "|".join(map(re.escape, sorted(words, key=len, reverse=True)))


_NATIONALITY_WORDS = [w for c in COUNTRIES.values() for w in c.demonyms]
_PROMPT_RE = re.compile(
    r"^(?P<medium>[a-z][a-z -]*?) of an? (?P<adjective>[a-z-]+) "
    rf"(?P<nationality>{_alternation(_NATIONALITY_WORDS)}) (?P<person>{_alternation(list(PERSONS))})$",
    re.IGNORECASE,
)


def _first_line(answer: str) -> str:
    for line in answer.strip().splitlines():
        line = line.strip().strip("\"'`*").strip()
        line = re.sub(r"^(?:\d+[.)]|[-•])\s*", "", line)  # "1. ", "- "
        if line:
            return line
    return ""


def parse_prompt(answer: str) -> PromptParts:
    """Parts of "charcoal sketch of an inquisitive Turkish boy"; ValueError says what is wrong.

    The grammar is the article's: medium, adjective, nationality (any demonym of
    :mod:`services.text.countries`), person (any word of :mod:`services.text.persons`). The first
    line is read, up to the first comma or full stop (weak models add a clause).
    """
    line = re.split(r"[,.;:!?(]", _first_line(answer), maxsplit=1)[0].strip()
    if not line:
        raise ValueError("empty answer")
    words = line.split()
    if words and words[0].lower() in ("a", "an"):
        words = words[1:]
    m = _PROMPT_RE.match(" ".join(words))
    if not m:
        raise ValueError(f"not '<medium> of a(n) <adjective> <nationality> <person>': {line[:80]!r}")
    medium, adjective = m["medium"].strip().lower(), m["adjective"].lower()
    if len(medium.split()) > 4 or not MEDIUM_WORDS & set(medium.replace("-", " ").split()):
        raise ValueError(f"medium {medium!r} names no technique (sketch, painting, photograph ...)")
    if adjective in NOT_ADJECTIVES or not 3 <= len(adjective) <= 20:
        raise ValueError(f"adjective {adjective!r} is not an adjective")
    if find_country(adjective) is not None:
        raise ValueError(f"adjective {adjective!r} is a nationality")
    found = find_country(m["nationality"])
    assert found is not None  # the pattern only admits country words
    return PromptParts(medium, adjective, found[1], m["person"].lower())


def read_prompt(text: str) -> PromptParts | None:
    """The parts of a user's prompt when it has the article's shape; None for a free-form
    prompt, which is used as it is (its nationality and person are still read for the name)."""
    try:
        return parse_prompt(text)
    except ValueError:
        return None


def available_countries(source: NameSource | None) -> tuple[str, ...]:
    """Countries names can come from: all of them with names-dataset, the curated table without."""
    if source is not None and source.enabled:
        return tuple(COUNTRIES)
    return tuple(CURATED)


def balanced_subjects(
    count: int, seed: int, wanted: CollectionFilter = NO_FILTER, countries: Sequence[str] = ()
) -> list[Plan]:
    """Who each portrait shows: regions round-robin (countries in turn within each), and
    age groups x genders cycled, all within ``wanted``; media cycled when ``wanted`` fixes them."""
    rng = random.Random(seed)
    pool = wanted.countries or tuple(countries) or tuple(CURATED)
    regions: list[list[str]] = []
    for codes in REGIONS.values():
        members = [c for c in codes if c in pool]
        if members:
            rng.shuffle(members)
            regions.append(members)
    rng.shuffle(regions)
    cells = [
        (age, gender)
        for age in (wanted.age_groups or AGE_GROUPS)
        for gender in (wanted.genders or ("f", "m"))
    ]
    rng.shuffle(cells)
    # Alternate genders where both are wanted, so that a short collection is not one-sided.
    cells = _interleave_genders(cells)
    media = list(wanted.media)
    rng.shuffle(media)
    out = []
    for i in range(count):
        region = regions[i % len(regions)]
        code = region[(i // len(regions)) % len(region)]
        cell = cells[i % len(cells)]
        words = CYCLE[cell]
        person = words[(i // len(cells)) % len(words)]
        medium = media[i % len(media)] if media else None
        out.append(Plan(COUNTRIES[code], person, medium))
    return out


def _interleave_genders(cells: list[tuple[str, str]]) -> list[tuple[str, str]]:
    by_gender = {g: [c for c in cells if c[1] == g] for g in ("f", "m")}
    merged = [c for pair in itertools.zip_longest(by_gender["f"], by_gender["m"]) for c in pair if c]
    return merged or cells


def template_prompt(plan: Plan, seed: int) -> PromptParts:
    rng = random.Random(f"prompt:{seed}:{plan.country.code}:{plan.person}")
    medium, adjective = rng.choice(MEDIA), rng.choice(ADJECTIVES)
    return PromptParts(plan.medium or medium, adjective, plan.country.demonym, plan.person)


# --------------------------------------------------------------------------- names


def parse_name(answer: str) -> tuple[str, str]:
    """(first, last) from an answer such as "Sophia Santos" or "Name: Sophia Santos."."""
    line = _first_line(answer)
    line = re.sub(r"^(?:(?:her|his|their|the|full)\s+)?name(?:\s+is)?\s*[:\-]?\s*", "", line, flags=re.I)
    line = re.split(r"[,.;:!?(]| - | – ", line, maxsplit=1)[0].strip()
    words = line.split()
    if len(words) != 2:
        raise ValueError(f"not a first and last name: {line[:60]!r}")
    for word in words:
        if not _NAME_WORD.match(word) or not 2 <= len(word) <= 20:
            raise ValueError(f"{word!r} is not a name")
        if not word[0].isupper() or word.isupper():
            raise ValueError(f"{word!r} is not capitalized like a name")
        if word.lower() in NOT_NAMES or word.lower() in guard.INSTRUCTION_WORDS:
            raise ValueError(f"{word!r} is not a name")
        if len(scripts(word)) > 1:
            # "Mаrilyn" with a Cyrillic "а" looks like a notable name and is not one to the check.
            raise ValueError(f"{word!r} mixes alphabets ({', '.join(sorted(scripts(word)))})")
    if words[0].lower() == words[1].lower():
        raise ValueError("first and last name are the same")
    return words[0], words[1]


def scripts(word: str) -> set[str]:
    """The alphabets of a word's letters: {"LATIN"}, {"LATIN", "CYRILLIC"}; kanji and kana
    count as one (Japanese names mix them)."""
    found = {unicodedata.name(c, "?").split()[0] for c in word if c.isalpha()}
    return {"CJK" if s in ("HIRAGANA", "KATAKANA") else s for s in found}


@dataclass(frozen=True)
class Subject:
    """Whom a name is for: a country and a gender, and where each came from (for the provenance)."""

    country: Country
    gender: str  # "m" or "f": the person's, or chosen when the description leaves it open
    stated_gender: str  # "" when the description leaves it open
    person: PersonWord | None
    notes: tuple[str, ...]


def resolve_subject(description: str, seed: int, source: NameSource | None = None) -> Subject:
    """Country and gender for ``description``, deterministic per (description, seed).

    A nationality in the description decides the country; without one, a regional word
    ("African", "Nordic") narrows the choice; without either, the country is drawn at random.
    A person word decides the gender; a neutral one ("teenager") or none leaves it to the draw.
    """
    rng = random.Random(f"subject:{seed}:{description}")
    available = available_countries(source)
    notes: list[str] = []
    found = find_country(description)
    if found is not None and found[0].code in available:
        country = found[0]
        notes.append(f"nationality: {found[1]} -> {country.code}")
    else:
        group = find_group(description)
        candidates = [c for c in (group[0] if group else ()) if c in available]
        if found is not None:
            # Without names-dataset only the curated countries have names: a neighbour's then.
            candidates = [c for c in REGIONS[found[0].region] if c in available] or list(available)
            country = COUNTRIES[rng.choice(candidates)]
            notes.append(f"nationality: {found[1]} has no name data here; names from {country.name}")
        elif candidates and group is not None:
            country = COUNTRIES[rng.choice(candidates)]
            notes.append(f"nationality: none in the description; names from {country.name} for {group[1]!r}")
        else:
            country = COUNTRIES[rng.choice(sorted(available))]
            notes.append(f"nationality: none in the description; names from {country.name}, chosen at random")
    person = find_person(description)
    stated = person.gender if person else ""
    gender = stated or rng.choice("fm")
    if person is None:
        notes.append(f"gender: none in the description; {GENDER_WORDS[gender]} chosen")
    elif not stated:
        notes.append(f"gender: {person.word!r} is either; {GENDER_WORDS[gender]} chosen")
    return Subject(country, gender, stated, person, tuple(notes))


def template_name(
    description: str,
    seed: int,
    skip: int = 0,
    source: NameSource | None = None,
    subject: Subject | None = None,
) -> tuple[str, str]:
    """A name for the person described: common names of their country and gender (names-dataset
    when ``source`` has them, else the curated table); deterministic per (description, seed, skip)."""
    subject = subject or resolve_subject(description, seed, source)
    rng = random.Random(f"name:{seed}:{description}:{skip}")
    males, females, surnames = (source.pools(subject.country.code) if source else None) or CURATED[
        subject.country.code
    ]
    first = rng.choice(males if subject.gender == "m" else females)
    # "Wang Wang": some names are both first names and surnames of a country.
    return first, rng.choice([s for s in surnames if s != first] or surnames)


def describe_subject(description: str) -> tuple[str | None, str | None]:
    """(nationality as written, person word) named in a description like "a thoughtful Brazilian girl"."""
    found = find_country(description)
    person = find_person(description)
    return (found[1] if found else None), (person.word if person else None)


# --------------------------------------------------------------------------- backstories


def word_count(text: str) -> int:
    return len(text.split())


def clean_backstory(answer: str, max_words: int) -> str:
    """Whitespace collapsed, trimmed to the last full sentence within ``max_words``."""
    text = " ".join(_CONTROL.sub(" ", answer).split()).strip("\"' ")
    text = re.sub(r"^(?:backstory|here is[^:]*)\s*:\s*", "", text, flags=re.I)
    if word_count(text) <= max_words and text.endswith((".", "!", "?", '."', '!"', '?"')):
        return text
    kept = " ".join(text.split()[:max_words])
    ends = [m.end() for m in re.finditer(r"[.!?][\"')]?(?=\s|$)", kept)]
    return kept[: ends[-1]] if ends else ""


_URL = re.compile(r"https?:|www\.|\b[\w-]+\.(?:com|org|net|io|info|co|edu|gov)\b", re.IGNORECASE)
_HE = re.compile(r"\b(?:he|him|his|himself)\b", re.IGNORECASE)
_SHE = re.compile(r"\b(?:she|her|hers|herself)\b", re.IGNORECASE)
# Words that say the person is grown up or old: wrong in a child's or a teenager's story.
_ADULT_LIFE = re.compile(
    r"\b(?:retired|retirement|pension|grandchild(?:ren)?|grandson|granddaughter|his wife|her husband|"
    r"widow(?:ed|er)?|married|decades|career|his late wife|her late husband)\b",
    re.IGNORECASE,
)
# Words that say the person is a child: wrong in an elder's story.
_CHILD_LIFE = re.compile(
    r"\b(?:is (?:a|an) (?:child|boy|girl|teenager|toddler)|kindergarten|primary school|middle school|"
    r"(?:first|second|third|fourth|fifth|sixth) grade|high school student|teenage (?:boy|girl))\b",
    re.IGNORECASE,
)
# The person's present age ("a 45-year-old teacher", "is 9 years old"), not a past one ("at 7").
_STATED_AGE = re.compile(r"\b(\d{1,3})-year-old\b|\b(?:is|turned|turns) (\d{1,3}) years? old\b", re.I)


def check_person(text: str, person: PersonWord | None) -> None:
    """ValueError when ``text`` contradicts the person's gender or age group.

    A simple check: the pronouns of the other gender must not outnumber the person's own
    (other people may be mentioned), a child's or a teenager's story must not give them a
    spouse, grandchildren or a pension, an elder's must not put them in school, and a stated
    age must fall in the person's age group.
    """
    if person is None:
        return
    he, she = len(_HE.findall(text)), len(_SHE.findall(text))
    if person.gender == "m" and she > he:
        raise ValueError(f"calls a {person.word} 'she' ({she} female pronouns, {he} male)")
    if person.gender == "f" and he > she:
        raise ValueError(f"calls a {person.word} 'he' ({he} male pronouns, {she} female)")
    if person.age_group in ("child", "teen"):
        adult = _ADULT_LIFE.search(text)
        if adult:
            raise ValueError(f"gives a {person.word} an adult's life ({adult.group(0)!r})")
    if person.age_group == "elder":
        child = _CHILD_LIFE.search(text)
        if child:
            raise ValueError(f"makes a {person.word} a child ({child.group(0)!r})")
    low, high = AGE_YEARS[person.age_group]
    for m in _STATED_AGE.finditer(text):
        years = int(m.group(1) or m.group(2))
        # A little slack: a "young man" of 17 or an "adult" of 66 is no contradiction.
        if not low - 3 <= years <= high + 6:
            raise ValueError(f"says {years} years old for a {person.word} ({person.age_group})")


def validate_backstory(
    text: str, name: str, max_words: int, min_words: int, person: PersonWord | None = None
) -> str:
    """``text`` when it is a usable backstory of ``name`` (and of ``person``); ValueError otherwise."""
    if not text:
        raise ValueError("no complete sentence within the length limit")
    n = word_count(text)
    if n > max_words:
        raise ValueError(f"{n} words, more than {max_words}")
    if n < min_words:
        raise ValueError(f"{n} words, fewer than {min_words}")
    if any(r in text.lower() for r in REFUSALS):
        raise ValueError("a refusal, not a backstory")
    if _URL.search(text) or has_control_chars(text):
        raise ValueError("links or control characters")
    parts = [normalize_word(p) for p in name.split()]
    words = {normalize_word(w) for w in re.findall(r"[^\W\d_]+", text)}
    if not any(p in words for p in parts):
        raise ValueError(f"does not mention {name}")
    check_person(text, person)
    return text


def normalize_word(word: str) -> str:
    text = unicodedata.normalize("NFKD", word)
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


_BACKSTORY_TEMPLATES = (
    "{first} grew up in a {place} where {pronoun} was known as {article} {adjective} {person}. "
    "{cap} spends long afternoons {pastime}, and friends say {first} notices what others miss. "
    "{cap} hopes one day to {dream}.",
    "Born into {nationality_article} {nationality} family of {trade}, {name} learned early to be "
    "{adjective}. These days {pronoun} enjoys {pastime}. {cap} dreams of the day {pronoun} will {dream}.",
)
_PLACES = ("busy harbour town", "quiet mountain village", "crowded city district", "farming valley")
_PASTIMES = ("sketching strangers in the market", "reading old maps", "repairing radios", "tending a garden")
_TRADES = ("weavers", "fishermen", "teachers", "bakers", "carpenters")
_DREAMS = ("travel to every continent", "open a small school", "write a book of family stories")


def template_backstory(name: str, description: str, seed: int, max_words: int) -> str:
    nationality, person = describe_subject(description)
    rng = random.Random(f"backstory:{seed}:{name}:{description}")
    adjective = next((a for a in ADJECTIVES if a in description.lower()), rng.choice(ADJECTIVES))
    gender = PERSONS[person].gender if person else ""
    pronoun = {"m": "he", "f": "she"}.get(gender, "they")
    text = rng.choice(_BACKSTORY_TEMPLATES).format(
        first=name.split()[0],
        name=name,
        place=rng.choice(_PLACES),
        pronoun=pronoun,
        cap=pronoun.capitalize(),
        article=article(adjective),
        adjective=adjective,
        person=person or "person",
        nationality=nationality or "close-knit",
        nationality_article=article(nationality or "close-knit"),
        pastime=rng.choice(_PASTIMES),
        trade=rng.choice(_TRADES),
        dream=rng.choice(_DREAMS),
    )
    if pronoun == "they":
        for wrong, right in (("was", "were"), ("enjoys", "enjoy"), ("spends", "spend"), ("hopes", "hope")):
            text = text.replace(f"they {wrong}", f"they {right}").replace(f"They {wrong}", f"They {right}")
    return clean_backstory(text, max_words) or text


# --------------------------------------------------------------------------- the core


@dataclass
class Outcome:
    """What every operation reports beside its answer, for the provenance."""

    attempts: int = 0
    llm_calls: int = 0
    fallbacks: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    # Where the name's country and gender came from, and what checked it.
    notes: list[str] = field(default_factory=list)

    def merge(self, other: Outcome) -> None:
        self.attempts += other.attempts
        self.llm_calls += other.llm_calls
        self.rejected.extend(other.rejected)
        self.fallbacks = sorted(set(self.fallbacks) | set(other.fallbacks))


@dataclass
class NameResult:
    first: str
    last: str
    outcome: Outcome
    subject: Subject | None = None


class AnswersInvalid(Transient):
    """The LLM gave no valid answer within the attempts and the template writer is off."""


class Refused(ValueError):
    """A well-formed answer that is turned down anyway; the message is the whole reason."""


def _name_request(description: str, wanted: str) -> str:
    """The user turn asking for a name: the description delimited, what kind of name outside."""
    return f"Create {wanted} name for the person described here: {guard.delimit(description)}"


class TextCore:
    """The LLM (or none), the notability check and the settings; shared by gRPC and NATS."""

    def __init__(self, settings: TextSettings, llm: LLMClient | None, notability: NotabilityChecker) -> None:
        self.settings = settings
        self.names = NameSource(settings.text_names_dataset)
        self.llm = llm
        self.notability = notability
        self._llm_slots = asyncio.Semaphore(max(1, settings.text_llm_concurrency))

    @staticmethod
    def _user_text(description: str, outcome: Outcome) -> guard.CleanText:
        """The description as it may go into a prompt; what was left out is noted (how much,
        not what: the provenance is job data)."""
        user = guard.clean_user_text(description)
        note = f"description: {len(user.removed)} instruction-like passage(s) left out of the LLM prompt"
        if user.removed and note not in outcome.notes:
            outcome.notes.append(note)
        return user

    @property
    def model_name(self) -> str:
        return self.llm.model if self.llm else "template-writer"

    async def _ask(self, messages: list[Message], max_tokens: int, seed: int, stop: list[str] | None) -> str:
        assert self.llm is not None
        async with self._llm_slots:
            reply = await self.llm.complete(
                messages,
                max_tokens=max_tokens,
                temperature=self.settings.text_llm_temperature,
                seed=seed,
                stop=stop,
            )
        return reply.text

    async def _ask_until_valid(
        self,
        messages: list[Message],
        *,
        max_tokens: int,
        seed: int,
        stop: list[str] | None,
        attempts: int,
        outcome: Outcome,
        accept: Callable[[str], Awaitable[T]],
    ) -> T | None:
        """The first answer ``accept`` takes, asking at most ``attempts`` times; None if none is.

        ``accept`` parses and checks an answer, raising ValueError to refuse it; every refusal
        is kept in ``outcome.rejected`` ("invalid: ..." or a :class:`Refused`'s own reason).
        Each re-ask uses another seed, so a sampling LLM does not repeat the same answer.
        """
        for attempt in range(attempts):
            outcome.attempts += 1
            outcome.llm_calls += 1
            answer = await self._ask(messages, max_tokens, seed + attempt * 7919, stop)
            try:
                return await accept(answer)
            except Refused as exc:
                outcome.rejected.append(str(exc))
            except ValueError as exc:
                outcome.rejected.append(f"invalid: {exc}")
        return None

    def _give_up(self, what: str, outcome: Outcome) -> None:
        if not self.settings.text_template_fallback:
            last = outcome.rejected[-1] if outcome.rejected else ""
            raise AnswersInvalid(f"no valid {what} from the LLM after {outcome.attempts} attempts ({last})")
        if "template-writer" not in outcome.fallbacks:
            outcome.fallbacks.append("template-writer")

    # -- prompts

    async def prompts(
        self,
        count: int,
        seed: int,
        max_attempts: int | None = None,
        wanted: CollectionFilter = NO_FILTER,
        with_names: bool = False,
    ) -> tuple[list[PromptParts], Outcome]:
        """``count`` balanced portrait prompts within ``wanted``, deterministic per seed for the
        template writer; with ``with_names`` each also gets a name no other prompt has."""
        attempts = max_attempts or self.settings.text_max_attempts
        plans = balanced_subjects(count, seed, wanted, available_countries(self.names))
        outcome = Outcome()
        if self.llm is None:
            outcome.fallbacks.append("template-writer (no LLM endpoint configured)")
            prompts = [template_prompt(plan, seed + i) for i, plan in enumerate(plans)]
        else:
            results = await asyncio.gather(
                *(self._one_prompt(plan, seed * 1000 + i, attempts) for i, plan in enumerate(plans))
            )
            prompts = []
            for i, (parts, sub) in enumerate(results):
                if parts is None:
                    self._give_up("prompt", sub)
                    parts = template_prompt(plans[i], seed + i)
                outcome.merge(sub)
                prompts.append(parts)
        if with_names:
            prompts = await self._name_all(prompts, seed, attempts, outcome)
        return prompts, outcome

    async def _name_all(
        self, prompts: list[PromptParts], seed: int, attempts: int, outcome: Outcome
    ) -> list[PromptParts]:
        """A name for every prompt, none repeated: each accepted name joins ``taken`` before
        any other answer is checked against it (no await between the check and the claim)."""
        taken: set[str] = set()
        results = await asyncio.gather(
            *(
                self.name(p.description, seed * 1000 + i, attempts, exclude=taken, claim=True)
                for i, p in enumerate(prompts)
            )
        )
        named = []
        for parts, result in zip(prompts, results, strict=True):
            outcome.merge(result.outcome)
            for note in result.outcome.notes:
                if note == OFFLINE_ONLY and OFFLINE_ONLY not in outcome.fallbacks:
                    outcome.fallbacks.append(OFFLINE_ONLY)
            named.append(dataclasses.replace(parts, first_name=result.first, last_name=result.last))
        return named

    async def _one_prompt(self, plan: Plan, seed: int, attempts: int) -> tuple[PromptParts | None, Outcome]:
        outcome = Outcome()
        nationality, person = plan.country.demonym, plan.person
        who = f"{article(nationality)} {nationality} {person}"
        as_medium = f" as {article(plan.medium)} {plan.medium}" if plan.medium else ""
        kenyan = " as an oil painting" if plan.medium else ""
        messages: list[Message] = [
            {
                "role": "system",
                "content": "You write one short prompt for a portrait of a fictional person, in the form "
                "'<medium> of a(n) <adjective> <nationality> <person>'. Reply with the prompt only.",
            },
            {"role": "user", "content": "Write a prompt for a Turkish boy."},
            {"role": "assistant", "content": "charcoal sketch of an inquisitive Turkish boy"},
            {"role": "user", "content": f"Write a prompt for a Kenyan grandmother{kenyan}."},
            {"role": "assistant", "content": "oil painting of a cheerful Kenyan grandmother"},
            {"role": "user", "content": f"Write a prompt for {who}{as_medium}."},
        ]

        async def accept(answer: str) -> PromptParts:
            parts = parse_prompt(answer)
            if (parts.country.code, parts.person) != (plan.country.code, person):
                raise ValueError(f"asked for {nationality} {person}, got {parts.nationality} {parts.person}")
            if plan.medium and parts.medium != plan.medium:
                raise ValueError(f"asked for {plan.medium!r}, got {parts.medium!r}")
            return dataclasses.replace(parts, nationality=nationality)

        parts = await self._ask_until_valid(
            messages, max_tokens=24, seed=seed, stop=["\n"], attempts=attempts, outcome=outcome, accept=accept
        )
        return parts, outcome

    # -- names

    async def _verdict(self, first: str, last: str, outcome: Outcome) -> str | None:
        """Why the name is notable, or None; an offline-only verdict is noted for the provenance."""
        verdict: Verdict = await asyncio.to_thread(self.notability.verdict, f"{first} {last}")
        if not verdict.online and OFFLINE_ONLY not in outcome.notes:
            outcome.notes.append(OFFLINE_ONLY)
        return verdict.reason

    def _claim(self, first: str, last: str, exclude: set[str] | None, claim: bool) -> None:
        """Refused when the name is excluded; else, with ``claim``, exclude it for the others."""
        if exclude is None:
            return
        key = name_key(first, last)
        if key in exclude:
            raise Refused(f"duplicate: {first} {last} is taken in this collection")
        if claim:
            exclude.add(key)

    async def name(
        self,
        description: str,
        seed: int,
        max_attempts: int | None = None,
        exclude: set[str] | None = None,
        claim: bool = False,
        reserved: str = "",
    ) -> NameResult:
        """First and last name for ``description``: of the person's country and gender, never
        notable, never one of ``exclude`` (name keys, see :func:`name_key`); re-asked while an
        answer fails any of these, then drawn from the templates. With ``claim`` the chosen
        name is added to ``exclude`` (one set shared by a collection's concurrent requests).
        A ``reserved`` name is kept when it still passes."""
        attempts = max_attempts or self.settings.text_max_attempts
        outcome = Outcome()
        subject = await asyncio.to_thread(resolve_subject, description, seed, self.names)
        outcome.notes.extend(subject.notes)
        if reserved:
            kept = await self._keep_reserved(reserved, exclude, claim, outcome)
            if kept is not None:
                return NameResult(*kept, outcome, subject)
        if self.llm is not None:
            named = await self._llm_name(description, subject, seed, attempts, exclude, claim, outcome)
            if named is not None:
                return NameResult(*named, outcome, subject)
            self._give_up("name", outcome)
        else:
            outcome.fallbacks.append("template-writer (no LLM endpoint configured)")
        for skip in range(200):
            first, last = await asyncio.to_thread(template_name, description, seed, skip, self.names, subject)
            reason = await self._verdict(first, last, outcome)
            if reason:
                outcome.rejected.append(f"notable: {first} {last} ({reason})")
                continue
            try:
                self._claim(first, last, exclude, claim)
            except Refused as exc:
                outcome.rejected.append(str(exc))
                continue
            return NameResult(first, last, outcome, subject)
        raise AnswersInvalid("the template writer found no name that is neither notable nor taken")

    async def _keep_reserved(
        self, reserved: str, exclude: set[str] | None, claim: bool, outcome: Outcome
    ) -> tuple[str, str] | None:
        try:
            first, last = parse_name(reserved)
            reason = await self._verdict(first, last, outcome)
            if reason:
                raise Refused(f"notable: {first} {last} ({reason})")
            self._claim(first, last, exclude, claim)
        except Refused as exc:
            outcome.rejected.append(f"reserved name dropped: {exc}")
            return None
        except ValueError as exc:
            outcome.rejected.append(f"reserved name dropped: invalid: {exc}")
            return None
        outcome.notes.append("name: reserved with the collection's prompts")
        return first, last

    async def _llm_name(
        self,
        description: str,
        subject: Subject,
        seed: int,
        attempts: int,
        exclude: set[str] | None,
        claim: bool,
        outcome: Outcome,
    ) -> tuple[str, str] | None:
        kind = f"{GENDER_WORDS[subject.gender]} {subject.country.demonym}"
        wanted = f"{article(kind)} {kind}"
        user = self._user_text(description, outcome)
        messages: list[Message] = [
            {
                "role": "system",
                "content": "You invent names of fictional people. Reply with first and last name only. "
                + guard.DATA_RULE,
            },
            {"role": "user", "content": _name_request("a thoughtful Brazilian girl", "a female Brazilian")},
            {"role": "assistant", "content": "Larissa Moura"},
            {"role": "user", "content": _name_request("an inquisitive Turkish boy", "a male Turkish")},
            {"role": "assistant", "content": "Kerem Aydemir"},
            {"role": "user", "content": _name_request(user.text or "a person", wanted)},
        ]
        must_fit = self.settings.text_names_must_fit

        async def accept(answer: str) -> tuple[str, str]:
            guard.check_answer(answer, user.removed)
            first, last = parse_name(answer)
            if exclude is not None and name_key(first, last) in exclude:
                raise Refused(f"duplicate: {first} {last} is taken in this collection")
            if must_fit:
                code, gender = subject.country.code, subject.gender
                fit = await asyncio.to_thread(self.names.fits, first, last, code, gender)
                if fit.reason:
                    raise Refused(f"misfit: {fit.reason}")
            reason = await self._verdict(first, last, outcome)
            if reason:
                raise Refused(f"notable: {first} {last} ({reason})")
            self._claim(first, last, exclude, claim)  # after the last await: check and claim at once
            return first, last

        return await self._ask_until_valid(
            messages, max_tokens=16, seed=seed, stop=["\n"], attempts=attempts, outcome=outcome, accept=accept
        )

    # -- backstories

    async def backstory(
        self, name: str, description: str, seed: int, max_words: int, max_attempts: int | None = None
    ) -> tuple[str, Outcome]:
        """A backstory of at most ``max_words`` words that mentions ``name``, has no links, and
        does not contradict the gender or age group of the person described."""
        attempts = max_attempts or self.settings.text_max_attempts
        outcome = Outcome()
        min_words = max(5, min(20, max_words // 4))
        person = find_person(description)
        if self.llm is not None:
            user = self._user_text(description, outcome)
            # The name is the job's: generated and checked, or typed by a user (reserved, edited).
            shown_name = guard.clean_user_text(name).text or name.split()[0]
            messages: list[Message] = [
                {
                    "role": "system",
                    "content": f"You write brief backstories of fictional people, at most {max_words} words. "
                    + guard.DATA_RULE,
                },
                {
                    "role": "user",
                    "content": f"Create a brief backstory for {shown_name}, the person described here: "
                    f"{guard.delimit(user.text or 'a person')}",
                },
            ]
            # About 1.4 tokens a word, and room to finish the sentence that crosses the limit.
            max_tokens = int(max_words * 1.4) + 16

            async def accept(answer: str) -> str:
                text = clean_backstory(answer, max_words)
                guard.check_answer(text, user.removed)
                return validate_backstory(text, name, max_words, min_words, person)

            text = await self._ask_until_valid(
                messages,
                max_tokens=max_tokens,
                seed=seed,
                stop=None,
                attempts=attempts,
                outcome=outcome,
                accept=accept,
            )
            if text is not None:
                return text, outcome
            self._give_up("backstory", outcome)
        else:
            outcome.fallbacks.append("template-writer (no LLM endpoint configured)")
        return template_backstory(name, description, seed, max_words), outcome


def load_core(settings: TextSettings) -> TextCore:
    """The notability data (WordNet, the configured list) and the LLM client; no LLM call here."""
    listed = None
    if settings.text_notable_names:
        source = settings.text_notable_names
        path = fetch_weights(
            source, settings, settings.text_notable_names_sha256, variable="GANFOLK_TEXT_NOTABLE_NAMES"
        )
        listed = read_name_list(path.read_bytes(), source)
        if not listed:
            raise ConfigError(f"GANFOLK_TEXT_NOTABLE_NAMES={source} holds no name of two or more words")
    notability = NotabilityChecker(
        settings.text_wordnet_dir,
        settings.text_wikipedia_api_url,
        settings.text_wikipedia_timeout_seconds,
        notable_names=listed,
        wikipedia_retries=settings.text_wikipedia_retries,
        wikipedia_retry_after=settings.text_wikipedia_retry_after_seconds,
    )
    llm = None
    if settings.text_llm_base_url:
        key = settings.text_llm_api_key.get_secret_value() if settings.text_llm_api_key else None
        llm = LLMClient(
            settings.text_llm_base_url,
            settings.text_llm_model,
            key,
            timeout=settings.text_llm_timeout_seconds,
            retries=settings.text_llm_retries,
            retry_wait=settings.text_llm_retry_wait_seconds,
        )
        log.info("text LLM", extra={"base_url": llm.base_url, "model": settings.text_llm_model})
    else:
        log.warning("GANFOLK_TEXT_LLM_BASE_URL is unset: the template writer answers every request")
    return TextCore(settings, llm, notability)
