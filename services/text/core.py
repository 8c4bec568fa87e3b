"""Text core: portrait prompts, names and backstories. No gRPC or NATS here.

Every LLM answer is parsed and validated, and re-asked a bounded number of times while it is
invalid (or, for names, while it belongs to a notable person). The template writer is the last
fallback: with no endpoint configured, or when the answers stay invalid; it is deterministic per
seed and recorded in the provenance as a fallback.

Prompts are balanced: the service picks each portrait's nationality (round-robin over world
regions) and person (over ages and genders) from curated lists, so a collection of N portraits
spreads across them (the article saw a bias towards European faces); the LLM picks the medium
and the adjective.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ganfolk.runtime.errors import Transient
from services.text.config import TextSettings
from services.text.llm import LLMClient, Message
from services.text.names import NameSource
from services.text.notability import NotabilityChecker

log = logging.getLogger(__name__)
T = TypeVar("T")

# --------------------------------------------------------------------------- curated lists

# nationality: male first names | female first names | surnames. REGIONS keep prompts balanced.
_NAME_TABLE = """
    Turkish: Emre Burak Mert | Elif Zeynep Defne | Yilmaz Kaya Demirci
    Iranian: Dariush Kaveh Arash | Shirin Parisa Laleh | Rostami Karimi Farahani
    Lebanese: Karim Elie Nadim | Rania Maya Lina | Haddad Khoury Nassar
    Egyptian: Omar Tarek Youssef | Nour Salma Hana | Mansour Saleh Farouk
    Moroccan: Yassine Hamza Anas | Imane Salma Houda | Benali Alaoui Tazi
    Kenyan: Otieno Kamau Kipchoge | Achieng Wanjiru Njeri | Mwangi Odhiambo Wekesa
    Nigerian: Chinedu Tunde Emeka | Ngozi Adaeze Folake | Okafor Adeyemi Eze
    Ghanaian: Kwame Kofi Yaw | Ama Akosua Efua | Mensah Boateng Owusu
    Ethiopian: Dawit Yonas Tesfaye | Selam Hiwot Meron | Bekele Tadesse Girma
    Senegalese: Moussa Ousmane Cheikh | Awa Fatou Aminata | Diallo Ndiaye Faye
    Indian: Arjun Rohan Vikram | Ananya Priya Meera | Sharma Iyer Reddy
    Pakistani: Bilal Usman Faisal | Ayesha Sana Hira | Qureshi Malik Chaudhry
    Bangladeshi: Rafiq Tanvir Arif | Nusrat Farzana Sharmin | Rahman Hossain Akter
    Nepalese: Bikash Suman Prakash | Sita Anjali Pooja | Shrestha Gurung Thapa
    Chinese: Wei Jian Hao | Mei Lian Xiu | Wang Zhou Lin
    Japanese: Haruto Ren Sota | Yui Aoi Hana | Tanaka Suzuki Watanabe
    Korean: Minjun Jiho Seojun | Jiwoo Seoyeon Hayun | Kim Park Choi
    Vietnamese: Minh Tuan Quang | Linh Thao Mai | Nguyen Tran Pham
    Indonesian: Budi Agus Rizky | Siti Dewi Putri | Santoso Wijaya Saputra
    Filipino: Jose Mark Paolo | Maria Angel Joy | Santos Reyes Bautista
    Thai: Somchai Anan Krit | Malee Siriporn Ploy | Saetang Wongsa Chaiyasit
    Mongolian: Bat Ganbold Temuulen | Saraa Oyun Nomin | Batbayar Enkhbat Ganzorig
    Brazilian: Lucas Gabriel Thiago | Sofia Beatriz Larissa | Santos Oliveira Souza
    Mexican: Diego Mateo Santiago | Valeria Ximena Camila | Hernandez Ramirez Flores
    Peruvian: Jorge Luis Renzo | Rosa Milagros Lucia | Quispe Mamani Huaman
    Colombian: Andres Camilo Julian | Daniela Mariana Paula | Restrepo Cardona Rojas
    Argentinian: Facundo Martin Nicolas | Agustina Florencia Julieta | Gonzalez Ferreyra Acosta
    Jamaican: Andre Damion Marlon | Shanice Kimone Tanisha | Campbell Brown Thompson
    Haitian: Jean Wilson Frantz | Nadege Fabienne Mirlande | Pierre Joseph Charles
    French: Louis Hugo Theo | Camille Chloe Manon | Martin Bernard Moreau
    Italian: Matteo Lorenzo Marco | Giulia Chiara Francesca | Rossi Esposito Ricci
    Spanish: Pablo Alvaro Sergio | Lucia Carmen Elena | Garcia Fernandez Lopez
    Polish: Jakub Kacper Piotr | Zofia Maja Kasia | Nowak Kowalczyk Wozniak
    Swedish: Erik Lars Oskar | Astrid Elsa Ingrid | Lindqvist Berg Nilsson
    Greek: Nikos Giorgos Dimitris | Eleni Katerina Sofia | Papadopoulos Nikolaidis Georgiou
    Russian: Dmitri Alexei Ivan | Anastasia Olga Tatiana | Ivanov Smirnov Volkov
    Samoan: Sione Tavita Filipo | Malia Leilani Losa | Tuilagi Faleolo Leota
    Fijian: Josefa Semi Viliame | Adi Litia Mere | Naivalu Tuilevu Ravula
"""
NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    nat.strip(): tuple(tuple(group.split()) for group in rest.split("|"))  # type: ignore[misc]
    for nat, rest in (line.split(":") for line in _NAME_TABLE.strip().splitlines())
}
REGIONS: tuple[tuple[str, ...], ...] = (
    ("Turkish", "Iranian", "Lebanese", "Egyptian", "Moroccan"),
    ("Kenyan", "Nigerian", "Ghanaian", "Ethiopian", "Senegalese"),
    ("Indian", "Pakistani", "Bangladeshi", "Nepalese"),
    ("Chinese", "Japanese", "Korean", "Mongolian"),
    ("Vietnamese", "Indonesian", "Filipino", "Thai"),
    ("Brazilian", "Mexican", "Peruvian", "Colombian", "Argentinian"),
    ("Jamaican", "Haitian", "Samoan", "Fijian"),
    ("French", "Italian", "Spanish", "Polish", "Swedish", "Greek", "Russian"),
)
NATIONALITIES: frozenset[str] = frozenset(NAMES)
# person -> gender ("m", "f" or "" for either); ages from child to elder.
PERSONS: dict[str, str] = {
    "boy": "m",
    "girl": "f",
    "teenager": "",
    "young man": "m",
    "young woman": "f",
    "man": "m",
    "woman": "f",
    "father": "m",
    "mother": "f",
    "old man": "m",
    "old woman": "f",
    "grandfather": "m",
    "grandmother": "f",
}
PERSON_CYCLE: tuple[str, ...] = (
    "girl", "boy", "young woman", "old man", "woman", "teenager", "man", "grandmother",
    "young man", "old woman", "grandfather", "mother", "father",
)  # fmt: skip
MEDIA: tuple[str, ...] = (
    "charcoal sketch", "oil painting", "watercolor painting", "pencil drawing", "pastel portrait",
    "ink drawing", "gouache painting", "acrylic painting", "woodcut print", "studio photograph",
    "etching", "tempera painting",
)  # fmt: skip
# Head words a medium must contain: the rendering technique or the kind of picture.
MEDIUM_WORDS: frozenset[str] = frozenset(
    "sketch drawing painting portrait photograph photo watercolor watercolour pastel etching engraving "
    "lithograph woodcut linocut illustration study mosaic fresco gouache tempera print miniature caricature "
    "pencil charcoal ink oil acrylic crayon silhouette daguerreotype tintype collage render rendering "
    "picture image sculpture bust".split()
)
ADJECTIVES: tuple[str, ...] = (
    "inquisitive", "thoughtful", "cheerful", "serene", "determined", "playful", "wise", "shy", "proud",
    "curious", "gentle", "confident", "dreamy", "mischievous", "kind", "stoic", "joyful", "pensive",
)  # fmt: skip
NOT_ADJECTIVES: frozenset[str] = frozenset("a an the of and with in on portrait prompt".split())
# Words a model echoes instead of a name.
NOT_NAMES: frozenset[str] = frozenset(
    "name first last the a an her his their she he it is create named called sure here mr mrs ms miss dr "
    "girl boy man woman painter artist person".split()
)
REFUSALS = ("as an ai", "i'm sorry", "i am sorry", "i cannot", "i can't", "language model")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAME_WORD = re.compile(r"^[^\W\d_]+(?:['’-][^\W\d_]+)*$")


def has_control_chars(text: str) -> bool:
    return bool(_CONTROL.search(text))


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptParts:
    medium: str
    adjective: str
    nationality: str
    person: str

    @property
    def text(self) -> str:
        return f"{self.medium} of {article(self.adjective)} {self.adjective} {self.nationality} {self.person}"


_NAT_RE = "|".join(sorted(map(re.escape, NATIONALITIES), key=len, reverse=True))
_PERSON_RE = "|".join(sorted(map(re.escape, PERSONS), key=len, reverse=True))
_PROMPT_RE = re.compile(
    r"^(?P<medium>[a-z][a-z -]*?) of an? (?P<adjective>[a-z-]+) "
    rf"(?P<nationality>{_NAT_RE}) (?P<person>{_PERSON_RE})$"
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

    The first line is read, up to the first comma or full stop (weak models add a clause).
    """
    line = re.split(r"[,.;:!?(]", _first_line(answer), maxsplit=1)[0].strip()
    if not line:
        raise ValueError("empty answer")
    words = line.split()
    if words and words[0].lower() in ("a", "an"):
        words = words[1:]
    # Medium and adjective in lower case; nationality and person as listed.
    text = " ".join(words)
    lowered = re.sub(r"^(.*? of an? \S+ )", lambda m: m.group(1).lower(), text)
    m = _PROMPT_RE.match(lowered)
    if not m:
        raise ValueError(f"not '<medium> of a(n) <adjective> <nationality> <person>': {line[:80]!r}")
    medium, adjective = m["medium"].strip(), m["adjective"]
    if len(medium.split()) > 4 or not MEDIUM_WORDS & set(medium.replace("-", " ").split()):
        raise ValueError(f"medium {medium!r} names no technique (sketch, painting, photograph ...)")
    if adjective in NOT_ADJECTIVES or not 3 <= len(adjective) <= 20:
        raise ValueError(f"adjective {adjective!r} is not an adjective")
    return PromptParts(medium, adjective, m["nationality"], m["person"])


def balanced_subjects(count: int, seed: int) -> list[tuple[str, str]]:
    """(nationality, person) for each portrait: regions round-robin, ages and genders cycled."""
    rng = random.Random(seed)
    regions = [list(r) for r in REGIONS]
    rng.shuffle(regions)
    for region in regions:
        rng.shuffle(region)
    persons = list(PERSON_CYCLE)
    offset = rng.randrange(len(persons))
    out = []
    for i in range(count):
        region = regions[i % len(regions)]
        nationality = region[(i // len(regions)) % len(region)]
        out.append((nationality, persons[(offset + i) % len(persons)]))
    return out


def template_prompt(nationality: str, person: str, seed: int) -> PromptParts:
    rng = random.Random(f"prompt:{seed}:{nationality}:{person}")
    return PromptParts(rng.choice(MEDIA), rng.choice(ADJECTIVES), nationality, person)


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
        if word.lower() in NOT_NAMES:
            raise ValueError(f"{word!r} is not a name")
    if words[0].lower() == words[1].lower():
        raise ValueError("first and last name are the same")
    return words[0], words[1]


def describe_subject(description: str) -> tuple[str | None, str | None]:
    """(nationality, person) named in a description like "a thoughtful Brazilian girl"."""
    nationality = next((n for n in NATIONALITIES if re.search(rf"\b{n}\b", description)), None)
    lowered = description.lower()
    person = next(
        (p for p in sorted(PERSONS, key=len, reverse=True) if re.search(rf"\b{p}\b", lowered)), None
    )
    return nationality, person


def template_name(
    description: str, seed: int, skip: int = 0, source: NameSource | None = None
) -> tuple[str, str]:
    """A name for the person described: names-dataset's common names of their country when
    ``source`` has them, else the curated table; deterministic per (description, seed, skip)."""
    nationality, person = describe_subject(description)
    rng = random.Random(f"name:{seed}:{description}:{skip}")
    nationality = nationality or rng.choice(sorted(NAMES))
    males, females, surnames = (source.pools(nationality) if source else None) or NAMES[nationality]
    gender = PERSONS.get(person or "", "") or rng.choice("mf")
    return rng.choice(males if gender == "m" else females), rng.choice(surnames)


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


def validate_backstory(text: str, name: str, max_words: int, min_words: int) -> str:
    """``text`` when it is a usable backstory of ``name``; ValueError otherwise."""
    if not text:
        raise ValueError("no complete sentence within the length limit")
    n = word_count(text)
    if n > max_words:
        raise ValueError(f"{n} words, more than {max_words}")
    if n < min_words:
        raise ValueError(f"{n} words, fewer than {min_words}")
    if any(r in text.lower() for r in REFUSALS):
        raise ValueError("a refusal, not a backstory")
    if "http" in text.lower() or has_control_chars(text):
        raise ValueError("links or control characters")
    parts = [normalize_word(p) for p in name.split()]
    words = {normalize_word(w) for w in re.findall(r"[^\W\d_]+", text)}
    if not any(p in words for p in parts):
        raise ValueError(f"does not mention {name}")
    return text


def normalize_word(word: str) -> str:
    text = unicodedata.normalize("NFKD", word)
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


_BACKSTORY_TEMPLATES = (
    "{first} grew up in a {place} where {pronoun} was known as {article} {adjective} {person}. "
    "{cap} spends long afternoons {pastime}, and friends say {first} notices what others miss. "
    "{cap} hopes one day to {dream}.",
    "Born into a {nationality} family of {trade}, {name} learned early to be {adjective}. "
    "These days {pronoun} enjoys {pastime}. {cap} dreams of the day {pronoun} will {dream}.",
)
_PLACES = ("busy harbour town", "quiet mountain village", "crowded city district", "farming valley")
_PASTIMES = ("sketching strangers in the market", "reading old maps", "repairing radios", "tending a garden")
_TRADES = ("weavers", "fishermen", "teachers", "bakers", "carpenters")
_DREAMS = ("travel to every continent", "open a small school", "write a book of family stories")


def template_backstory(name: str, description: str, seed: int, max_words: int) -> str:
    nationality, person = describe_subject(description)
    rng = random.Random(f"backstory:{seed}:{name}:{description}")
    adjective = next((a for a in ADJECTIVES if a in description.lower()), rng.choice(ADJECTIVES))
    gender = PERSONS.get(person or "", "")
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


@dataclass
class NameResult:
    first: str
    last: str
    outcome: Outcome


class AnswersInvalid(Transient):
    """The LLM gave no valid answer within the attempts and the template writer is off."""


class Refused(ValueError):
    """A well-formed answer that is turned down anyway; the message is the whole reason."""


class TextCore:
    """The LLM (or none), the notability check and the settings; shared by gRPC and NATS."""

    def __init__(self, settings: TextSettings, llm: LLMClient | None, notability: NotabilityChecker) -> None:
        self.settings = settings
        self.names = NameSource(settings.text_names_dataset)
        self.llm = llm
        self.notability = notability
        self._llm_slots = asyncio.Semaphore(max(1, settings.text_llm_concurrency))

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
        self, count: int, seed: int, max_attempts: int | None = None
    ) -> tuple[list[PromptParts], Outcome]:
        """``count`` balanced portrait prompts, deterministic per seed for the template writer."""
        attempts = max_attempts or self.settings.text_max_attempts
        subjects = balanced_subjects(count, seed)
        outcome = Outcome()
        if self.llm is None:
            outcome.fallbacks.append("template-writer (no LLM endpoint configured)")
            return [template_prompt(n, p, seed + i) for i, (n, p) in enumerate(subjects)], outcome
        results = await asyncio.gather(
            *(self._one_prompt(n, p, seed * 1000 + i, attempts) for i, (n, p) in enumerate(subjects))
        )
        prompts: list[PromptParts] = []
        for i, (parts, sub) in enumerate(results):
            outcome.attempts += sub.attempts
            outcome.llm_calls += sub.llm_calls
            outcome.rejected.extend(sub.rejected)
            if parts is None:
                self._give_up("prompt", sub)
                outcome.fallbacks = sorted(set(outcome.fallbacks) | set(sub.fallbacks))
                parts = template_prompt(*subjects[i], seed + i)
            prompts.append(parts)
        return prompts, outcome

    async def _one_prompt(
        self, nationality: str, person: str, seed: int, attempts: int
    ) -> tuple[PromptParts | None, Outcome]:
        outcome = Outcome()
        messages: list[Message] = [
            {
                "role": "system",
                "content": "You write one short prompt for a portrait of a fictional person, in the form "
                "'<medium> of a(n) <adjective> <nationality> <person>'. Reply with the prompt only.",
            },
            {"role": "user", "content": "Write a prompt for a Turkish boy."},
            {"role": "assistant", "content": "charcoal sketch of an inquisitive Turkish boy"},
            {"role": "user", "content": "Write a prompt for a Kenyan grandmother."},
            {"role": "assistant", "content": "oil painting of a cheerful Kenyan grandmother"},
            {"role": "user", "content": f"Write a prompt for {article(nationality)} {nationality} {person}."},
        ]

        async def accept(answer: str) -> PromptParts:
            parts = parse_prompt(answer)
            if (parts.nationality, parts.person) != (nationality, person):
                raise ValueError(f"asked for {nationality} {person}, got {parts.nationality} {parts.person}")
            return parts

        parts = await self._ask_until_valid(
            messages, max_tokens=24, seed=seed, stop=["\n"], attempts=attempts, outcome=outcome, accept=accept
        )
        return parts, outcome

    # -- names

    async def name(self, description: str, seed: int, max_attempts: int | None = None) -> NameResult:
        """First and last name for ``description``; re-asked while invalid or notable."""
        attempts = max_attempts or self.settings.text_max_attempts
        outcome = Outcome()
        if self.llm is not None:
            messages: list[Message] = [
                {
                    "role": "system",
                    "content": "You invent names of fictional people. Reply with first and last name only.",
                },
                {"role": "user", "content": "Create a name for a thoughtful Brazilian girl."},
                {"role": "assistant", "content": "Larissa Moura"},
                {"role": "user", "content": "Create a name for an inquisitive Turkish boy."},
                {"role": "assistant", "content": "Kerem Aydemir"},
                {"role": "user", "content": f"Create a name for {description}."},
            ]

            async def accept(answer: str) -> tuple[str, str]:
                first, last = parse_name(answer)
                reason = await asyncio.to_thread(self.notability.check, f"{first} {last}")
                if reason:
                    raise Refused(f"notable: {first} {last} ({reason})")
                return first, last

            named = await self._ask_until_valid(
                messages,
                max_tokens=16,
                seed=seed,
                stop=["\n"],
                attempts=attempts,
                outcome=outcome,
                accept=accept,
            )
            if named is not None:
                return NameResult(*named, outcome)
            self._give_up("name", outcome)
        else:
            outcome.fallbacks.append("template-writer (no LLM endpoint configured)")
        for skip in range(100):
            first, last = await asyncio.to_thread(template_name, description, seed, skip, self.names)
            reason = self.notability.check(f"{first} {last}")
            if not reason:
                return NameResult(first, last, outcome)
            outcome.rejected.append(f"notable: {first} {last} ({reason})")
        raise AnswersInvalid("the template writer found no name that is not notable")

    # -- backstories

    async def backstory(
        self, name: str, description: str, seed: int, max_words: int, max_attempts: int | None = None
    ) -> tuple[str, Outcome]:
        """A backstory of at most ``max_words`` words that mentions ``name``."""
        attempts = max_attempts or self.settings.text_max_attempts
        outcome = Outcome()
        min_words = max(5, min(20, max_words // 4))
        if self.llm is not None:
            messages: list[Message] = [
                {
                    "role": "system",
                    "content": f"You write brief backstories of fictional people, at most {max_words} words.",
                },
                {"role": "user", "content": f"Create a brief backstory for {name}, {description}."},
            ]
            # About 1.4 tokens a word, and room to finish the sentence that crosses the limit.
            max_tokens = int(max_words * 1.4) + 16

            async def accept(answer: str) -> str:
                return validate_backstory(clean_backstory(answer, max_words), name, max_words, min_words)

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
    """The notability data (WordNet) and the LLM client; no LLM call is made here."""
    notability = NotabilityChecker(
        settings.text_wordnet_dir, settings.text_wikipedia_api_url, settings.text_wikipedia_timeout_seconds
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
        log.info("text LLM", extra={"base_url": settings.text_llm_base_url, "model": settings.text_llm_model})
    else:
        log.warning("GANFOLK_TEXT_LLM_BASE_URL is unset: the template writer answers every request")
    return TextCore(settings, llm, notability)


def sequence_text(items: Sequence[PromptParts]) -> list[str]:
    return [p.text for p in items]
