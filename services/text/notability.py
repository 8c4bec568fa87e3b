"""The "no celebrities" check: a generated name must not belong to a notable real person.

As in the article, a name with its own Wikipedia article is rejected: the MediaWiki API is
asked first (on by default, with a short deadline). When it cannot be reached the offline
checks decide alone and the verdict says so, for the provenance ("notability: offline only"):

- the person entries of WordNet: every noun synset that is an *instance* of a kind of person
  (``@i`` pointer to a synset under ``person.n.01``), e.g. ``Monet, Claude_Monet`` ("French
  impressionist painter (1840-1926)"). The Debian ``wordnet-base`` files are parsed directly
  (``data.noun``); NLTK's reader does not understand Debian's layout.
- an optional list of notable names the user configures (a text or CSV file, one name a line,
  e.g. Wikidata's humans exported with their labels).

Names are compared normalised: case, accents, punctuation, middle names and suffixes such as
"Jr." or "III" do not matter ("Barack Hussein Obama II" matches "Barack Obama").
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import logging
import re
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

log = logging.getLogger(__name__)

PERSON_SYNSET = "00007846"  # person, individual, someone, somebody, mortal, soul
_SUFFIXES = frozenset({"jr", "junior", "sr", "senior", "ii", "iii", "iv", "v", "phd", "md", "esq"})
_HONORIFICS = frozenset({"sir", "dame", "dr", "mr", "mrs", "ms", "lord", "lady", "saint", "st"})
# CSV columns that hold the name in exports of Wikidata or similar (the first column otherwise).
_NAME_COLUMNS = ("name", "label", "itemlabel", "personlabel", "humanlabel", "full_name", "fullname")
OFFLINE_ONLY = "notability: offline only"


def normalize(name: str) -> str:
    """Lower case, no accents, single spaces: "Claude  Monet" == "claude monet" == "Clàude Monet"."""
    text = unicodedata.normalize("NFKD", name.replace("_", " "))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.lower().replace(".", " ").split())


def name_keys(name: str) -> tuple[str, ...]:
    """The keys ``name`` is indexed and looked up by: the whole name and first + last name,
    without punctuation, honorifics and suffixes. Empty for a single word (a bare surname such
    as "Monet" is too common to reject on its own)."""
    words = re.sub(r"[^\w\s'-]", " ", normalize(name)).replace("'", "").split()
    while words and words[0] in _HONORIFICS:
        words = words[1:]
    while len(words) > 2 and words[-1] in _SUFFIXES:
        words = words[:-1]
    if len(words) == 2 and words[-1] in _SUFFIXES:
        words = words[:-1]
    if len(words) < 2:
        return ()
    return tuple(dict.fromkeys((" ".join(words), f"{words[0]} {words[-1]}")))


@dataclass(frozen=True)
class NotablePerson:
    lemma: str  # as the source spells it, e.g. "Claude Monet"
    gloss: str  # "French impressionist painter (1840-1926)"; the list's name for a user's list


@dataclass(frozen=True)
class Verdict:
    """Why a name is notable (None: it is not), and whether the online check took part."""

    reason: str | None
    online: bool


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
    """Name keys (:func:`name_keys`) of WordNet's notable people."""
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
            entry = NotablePerson(word.replace("_", " "), gloss)
            for key in name_keys(entry.lemma):
                people.setdefault(key, entry)
    return people


def read_name_list(data: bytes, source: str) -> dict[str, NotablePerson]:
    """Name keys of a user's list of notable names: a text file with one name a line, or a CSV
    file whose name column is called name/label/itemLabel (else its first column). Lines that
    are empty, comments (#) or URLs (a Wikidata item column) are skipped."""
    text = data.decode("utf-8-sig", errors="replace")
    rows: Iterable[str]
    if source.lower().endswith(".csv"):
        reader = csv.reader(io.StringIO(text))
        header = next(reader, [])
        lowered = [h.strip().lower() for h in header]
        column = next((lowered.index(c) for c in _NAME_COLUMNS if c in lowered), None)
        if column is None:  # no header: the first row is a name too
            column = 0
            rows = [header[0] if header else "", *(r[0] for r in reader if r)]
        else:
            rows = (r[column] for r in reader if len(r) > column)
    else:
        rows = text.splitlines()
    people: dict[str, NotablePerson] = {}
    for row in rows:
        name = row.strip()
        if not name or name.startswith("#") or "://" in name:
            continue
        entry = NotablePerson(name, source)
        for key in name_keys(name):
            people.setdefault(key, entry)
    return people


class WikipediaUnavailable(Exception):
    """The MediaWiki API did not answer within the deadline."""


def _retryable(exc: BaseException) -> bool:
    # Only a server that answered "busy" is asked again; an unreachable one fails fast.
    return isinstance(exc, urllib.error.HTTPError) and (exc.code == 429 or exc.code >= 500)


class NotabilityChecker:
    """``verdict(name)`` -> why the name is notable, and whether Wikipedia was asked.

    Loaded once per process. The online check has one deadline for all its attempts (DNS
    included: the request runs in a worker thread that is abandoned when the deadline passes)
    and, after a failure, is not tried again for ``wikipedia_retry_after`` seconds, so that an
    offline machine pays the deadline once a while, not once per name.
    """

    def __init__(
        self,
        wordnet_dir: Path,
        wikipedia_api_url: str | None = None,
        wikipedia_timeout: float = 2.0,
        notable_names: dict[str, NotablePerson] | None = None,
        wikipedia_retries: int = 1,
        wikipedia_retry_after: float = 60.0,
    ) -> None:
        self.people = load_wordnet_people(wordnet_dir)
        self.listed = notable_names or {}
        self.wikipedia_api_url = wikipedia_api_url or None
        self.wikipedia_timeout = wikipedia_timeout
        self.wikipedia_retries = wikipedia_retries
        self.wikipedia_retry_after = wikipedia_retry_after
        self._offline_until = 0.0
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="wikipedia")
        log.info(
            "notability check ready",
            extra={
                "wordnet_people": len(self.people),
                "listed_names": len(self.listed),
                "wikipedia": self.wikipedia_api_url or "off",
            },
        )

    def check(self, name: str) -> str | None:
        """A reason such as "WordNet: Claude Monet, French impressionist painter (1840-1926)", or None."""
        return self.verdict(name).reason

    def offline(self, name: str) -> str | None:
        """The offline checks alone: WordNet and the configured list."""
        for key in name_keys(name):
            person = self.people.get(key)
            if person is not None:
                return f"WordNet: {person.lemma}, {person.gloss}"
            listed = self.listed.get(key)
            if listed is not None:
                return f"listed: {listed.lemma} ({listed.gloss})"
        return None

    def verdict(self, name: str) -> Verdict:
        """The offline checks, then Wikipedia when configured and reachable."""
        reason = self.offline(name)
        online = False
        if self.wikipedia_api_url and time.monotonic() >= self._offline_until:
            try:
                found = self._wikipedia(name)
            except WikipediaUnavailable as exc:
                with self._lock:
                    self._offline_until = time.monotonic() + self.wikipedia_retry_after
                log.warning("wikipedia check unavailable, offline checks only for %ss: %s",
                            self.wikipedia_retry_after, exc)  # fmt: skip
            else:
                online = True
                reason = reason or found
        return Verdict(reason, online)

    def _wikipedia(self, name: str) -> str | None:
        """The article titled ``name`` (redirects followed), or None when there is none."""
        query = urllib.parse.urlencode(
            {
                "action": "query",
                "titles": name,
                "redirects": 1,
                "prop": "pageprops",
                "ppprop": "disambiguation",
                "format": "json",
                "formatversion": 2,
            }
        )
        url = f"{self.wikipedia_api_url}?{query}"
        deadline = self.wikipedia_timeout
        retrying = Retrying(
            stop=stop_after_attempt(self.wikipedia_retries + 1) | stop_after_delay(deadline),
            wait=wait_exponential(multiplier=0.1, max=deadline / 4),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )

        def ask() -> dict[str, object]:
            for attempt in retrying:
                with attempt:
                    request = urllib.request.Request(
                        url, headers={"User-Agent": "ganfolk-text/1 (notability check of generated names)"}
                    )
                    with urllib.request.urlopen(request, timeout=deadline) as reply:
                        return json.loads(reply.read())  # type: ignore[no-any-return]
            raise AssertionError("tenacity stops by raising")

        future = self._pool.submit(ask)
        try:
            body = future.result(timeout=deadline)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise WikipediaUnavailable(f"no answer from {self.wikipedia_api_url} within {deadline}s") from exc
        except (OSError, ValueError) as exc:
            raise WikipediaUnavailable(f"{self.wikipedia_api_url}: {exc}") from exc
        query_result = body.get("query")
        if not isinstance(query_result, dict):
            raise WikipediaUnavailable(f"{self.wikipedia_api_url} answered without a query result")
        for page in query_result.get("pages", []):
            if page.get("missing") or page.get("invalid"):
                continue
            title = page.get("title", name)
            if "disambiguation" in (page.get("pageprops") or {}):
                return f"Wikipedia: {title} (a disambiguation page: several notable people have this name)"
            return f"Wikipedia: {title}"
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
