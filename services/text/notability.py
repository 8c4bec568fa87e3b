"""The "no celebrities" check: a generated name must not belong to a notable real person.

As in the article, a name with its own Wikipedia article is rejected. Offline, the person
entries of WordNet stand in for Wikipedia: every noun synset that is an *instance* of a kind
of person (``@i`` pointer to a synset under ``person.n.01``), e.g. ``Monet, Claude_Monet``
("French impressionist painter (1840-1926)"). The Debian ``wordnet-base`` files are parsed
directly (``data.noun``); NLTK's reader does not understand Debian's layout. The MediaWiki API
is asked as well when a URL is configured (off by default: no machine here reaches it).
"""

from __future__ import annotations

import json
import logging
import unicodedata
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PERSON_SYNSET = "00007846"  # person, individual, someone, somebody, mortal, soul


def normalize(name: str) -> str:
    """Lower case, no accents, single spaces: "Claude  Monet" == "claude monet" == "Clàude Monet"."""
    text = unicodedata.normalize("NFKD", name.replace("_", " "))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.lower().replace(".", " ").split())


@dataclass(frozen=True)
class NotablePerson:
    lemma: str  # as WordNet spells it, e.g. "Claude Monet"
    gloss: str  # "French impressionist painter (1840-1926)"


def _parse_data_noun(path: Path) -> tuple[dict[str, list[str]], dict[str, tuple[list[str], list[str], str]]]:
    """hypernyms: offset -> hypernym offsets; instances: offset -> (lemmas, instance-of offsets, gloss)."""
    hypernyms: dict[str, list[str]] = {}
    instances: dict[str, tuple[list[str], list[str], str]] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            data, _, gloss = line.partition(" | ")
            fields = data.split()
            offset, w_cnt = fields[0], int(fields[3], 16)
            words = [fields[4 + 2 * i] for i in range(w_cnt)]
            pos = 4 + 2 * w_cnt
            p_cnt = int(fields[pos])
            ups: list[str] = []
            inst: list[str] = []
            for i in range(p_cnt):
                symbol, target = fields[pos + 1 + 4 * i], fields[pos + 2 + 4 * i]
                if symbol in ("@", "@i"):
                    (inst if symbol == "@i" else ups).append(target)
            if ups:
                hypernyms[offset] = ups
            if inst:
                instances[offset] = (words, inst, gloss.strip())
    return hypernyms, instances


def load_wordnet_people(wordnet_dir: Path) -> dict[str, NotablePerson]:
    """Normalized full names (and first + last of longer ones) of WordNet's notable people."""
    candidates = [wordnet_dir / "data.noun", wordnet_dir / "dict" / "data.noun"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"WordNet data.noun not found under {wordnet_dir} (apt-get install wordnet-base, "
            "or set GANFOLK_TEXT_WORDNET_DIR)"
        )
    hypernyms, instances = _parse_data_noun(path)
    is_person: dict[str, bool] = {PERSON_SYNSET: True}

    def under_person(offset: str, seen: frozenset[str] = frozenset()) -> bool:
        if offset in is_person:
            return is_person[offset]
        result = any(under_person(up, seen | {offset}) for up in hypernyms.get(offset, ()) if up not in seen)
        is_person[offset] = result
        return result

    people: dict[str, NotablePerson] = {}
    for words, classes, gloss in instances.values():
        if not any(under_person(c) for c in classes):
            continue
        for word in words:
            lemma = word.replace("_", " ")
            parts = normalize(lemma).split()
            if len(parts) < 2:
                continue  # a bare surname ("Monet") is too common to reject on its own
            entry = NotablePerson(lemma, gloss)
            people.setdefault(" ".join(parts), entry)
            people.setdefault(f"{parts[0]} {parts[-1]}", entry)  # "John Fitzgerald Kennedy"
    return people


class NotabilityChecker:
    """``check(name)`` -> why the name is notable, or None. Loaded once per process."""

    def __init__(
        self, wordnet_dir: Path, wikipedia_api_url: str | None = None, wikipedia_timeout: float = 5.0
    ) -> None:
        self.people = load_wordnet_people(wordnet_dir)
        self.wikipedia_api_url = wikipedia_api_url
        self.wikipedia_timeout = wikipedia_timeout
        log.info("notability check ready", extra={"wordnet_people": len(self.people)})

    def check(self, name: str) -> str | None:
        """A reason such as "WordNet: Claude Monet, French impressionist painter (1840-1926)", or None."""
        person = self.people.get(normalize(name))
        if person is not None:
            return f"WordNet: {person.lemma}, {person.gloss}"
        if self.wikipedia_api_url:
            return self._wikipedia(name)
        return None

    def _wikipedia(self, name: str) -> str | None:
        """An article titled ``name`` exists (redirects followed). Unreachable: logged, not fatal."""
        query = urllib.parse.urlencode(
            {"action": "query", "titles": name, "redirects": 1, "format": "json", "formatversion": 2}
        )
        request = urllib.request.Request(
            f"{self.wikipedia_api_url}?{query}", headers={"User-Agent": "ganfolk-text/1 (notability check)"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.wikipedia_timeout) as reply:
                pages = json.loads(reply.read()).get("query", {}).get("pages", [])
        except (OSError, ValueError) as exc:
            log.warning("wikipedia check unavailable: %s", exc)
            return None
        for page in pages:
            if not page.get("missing") and not page.get("invalid"):
                return f"Wikipedia: {page.get('title', name)}"
        return None
