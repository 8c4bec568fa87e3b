"""The "no celebrities" check against WordNet's people (Debian wordnet-base)."""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from services.text.notability import NotabilityChecker, Verdict, read_name_list
from tests.fixtures.nats import free_port


@pytest.mark.parametrize(
    "name",
    [
        "Claude Monet",
        "claude monet",
        "Clàude  Monet",
        "Albert Einstein",
        "Marie Curie",
        "Pablo Picasso",
        "John Kennedy",
    ],
)
def test_wordnet_people_are_notable(notability: NotabilityChecker, name: str) -> None:
    reason = notability.check(name)
    assert reason is not None and reason.startswith("WordNet: ")


def test_monet_reason_names_the_painter(notability: NotabilityChecker) -> None:
    assert (
        notability.check("Claude Monet") == "WordNet: Claude Monet, French impressionist painter (1840-1926)"
    )


@pytest.mark.parametrize("name", ["Sophia Santos", "Larissa Moura", "Kerem Aydemir", "Elisa Bossa"])
def test_fictional_names_pass(notability: NotabilityChecker, name: str) -> None:
    assert notability.check(name) is None


def test_wordnet_holds_thousands_of_people(notability: NotabilityChecker) -> None:
    assert len(notability.people) > 5000


FAMOUS = [
    "Barack Obama",
    "Taylor Swift",
    "Lionel Messi",
    "Frida Kahlo",
    "Leonardo DiCaprio",
    "Diego Maradona",
]
# As a user's export might spell them: middle names, suffixes, accents, other case.
LISTED = """# notable humans
Barack Hussein Obama II
Taylor Alison Swift
Lionel Andrés Messi
Frida Kahlo
Leonardo Wilhelm DiCaprio
Diego Armando Maradona
"""


@pytest.mark.parametrize("name", FAMOUS)
def test_six_celebrities_pass_wordnet_alone(notability: NotabilityChecker, name: str) -> None:
    """Why the configured list exists: WordNet (2006) does not know them."""
    assert notability.offline(name) is None


@pytest.mark.parametrize(
    "name", [*FAMOUS, "barack obama", "Lionel Messi Jr.", "Diego A. Maradona", "FRIDA KAHLO"]
)
def test_configured_list_rejects_them(notability: NotabilityChecker, name: str) -> None:
    checker = copy.copy(notability)
    checker.listed = read_name_list(LISTED.encode(), "notable.txt")
    reason = checker.check(name)
    assert reason is not None and reason.startswith("listed: ")


def test_csv_list_with_a_wikidata_header() -> None:
    data = (
        b"item,itemLabel\n"
        b"http://www.wikidata.org/entity/Q76,Barack Obama\n"
        b"http://www.wikidata.org/entity/Q26876,Taylor Swift\n"
    )
    listed = read_name_list(data, "humans.csv")
    assert {"barack obama", "taylor swift"} <= set(listed)
    assert not any("wikidata" in key for key in listed)
    plain = read_name_list(b"Frida Kahlo,1907\nDiego Maradona,1960\n", "plain.csv")  # no header
    assert {"frida kahlo", "diego maradona"} <= set(plain)


def test_configured_list_from_the_store(tmp_path, notability: NotabilityChecker) -> None:
    """GANFOLK_TEXT_NOTABLE_NAMES as an s3:// URI in the service's own store."""
    from ganfolk.runtime.storage import open_store
    from services.text.config import TextSettings
    from services.text.core import load_core

    with open_store(str(tmp_path / "store")) as store:
        store.put("lists/notable.txt", LISTED.encode())
        uri = store.uri("lists/notable.txt")
    settings = TextSettings(
        store_url=str(tmp_path / "store"),
        state_dir=tmp_path / "state",
        text_notable_names=uri,
        text_wikipedia_api_url="",
    )
    core = load_core(settings)
    assert core.notability.check("Taylor Swift") == "listed: Taylor Alison Swift (" + uri + ")"


@pytest.fixture
def mediawiki() -> Iterator[str]:
    """A loopback stand-in of the MediaWiki query API: one article, one disambiguation page,
    one title that answers too late, and 503 for "Busy Person" the first time."""
    calls: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            title = query["titles"][0]
            calls[title] = calls.get(title, 0) + 1
            assert query["action"] == ["query"] and query["redirects"] == ["1"]
            if title == "Slow Person":
                time.sleep(3)
            if title == "Busy Person" and calls[title] == 1:
                self.send_response(503)
                self.end_headers()
                return
            if title == "Frida Kahlo":
                page: dict[str, Any] = {"title": title, "pageid": 1}
            elif title == "Maria Santos":
                page = {"title": title, "pageid": 2, "pageprops": {"disambiguation": ""}}
            else:
                page = {"title": title, "missing": True}
            body = json.dumps({"batchcomplete": True, "query": {"pages": [page]}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the slow one was given up
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/w/api.php"
    server.shutdown()
    server.server_close()


def _online(notability: NotabilityChecker, url: str, timeout: float = 1.0) -> NotabilityChecker:
    checker = copy.copy(notability)
    checker.wikipedia_api_url, checker.wikipedia_timeout = url, timeout
    checker._offline_until = 0.0
    return checker


def test_wikipedia_found_missing_and_disambiguation(mediawiki: str, notability: NotabilityChecker) -> None:
    checker = _online(notability, mediawiki)
    assert checker.verdict("Frida Kahlo") == Verdict("Wikipedia: Frida Kahlo", online=True)  # not in WordNet
    assert checker.verdict("Sophia Santos") == Verdict(None, online=True)
    reason = checker.check("Maria Santos")
    assert reason is not None and "disambiguation page" in reason
    assert checker.verdict("Busy Person") == Verdict(None, online=True)  # 503, retried within the deadline


def test_wikipedia_timeout_falls_back_to_offline_for_a_while(
    mediawiki: str, notability: NotabilityChecker
) -> None:
    checker = _online(notability, mediawiki, timeout=0.5)
    started = time.perf_counter()
    assert checker.verdict("Slow Person") == Verdict(None, online=False)
    assert time.perf_counter() - started < 1.5  # the deadline, not the server, decides
    started = time.perf_counter()
    assert checker.verdict("Frida Kahlo") == Verdict(None, online=False)  # skipped: no second wait
    assert checker.verdict("Claude Monet").reason is not None  # WordNet still answers
    assert time.perf_counter() - started < 0.2


def test_wikipedia_unreachable_fails_fast(notability: NotabilityChecker) -> None:
    checker = _online(notability, f"http://127.0.0.1:{free_port()}/api.php")
    started = time.perf_counter()
    assert checker.verdict("Sophia Santos") == Verdict(None, online=False)
    assert time.perf_counter() - started < 1.0


async def test_name_provenance_says_offline_only(tmp_path) -> None:
    """The default-on check, unreachable: the name still comes, and the provenance says so."""
    from ganfolk.v1 import text_pb2, text_pb2_grpc
    from services.text.main import SERVICE
    from tests.fixtures.services import serving

    down = f"http://127.0.0.1:{free_port()}/w/api.php"
    async with serving(
        SERVICE, worker_enabled=False, store_url=str(tmp_path), text_wikipedia_api_url=down
    ) as (
        _,
        channel,
    ):
        stub = text_pb2_grpc.TextServiceStub(channel)
        reply = await stub.Name(text_pb2.NameRequest(description="a mischievous English teenager", seed=2))
    assert "notability: offline only" in reply.provenance.fallbacks
    assert reply.country_code == "GB" and reply.gender in ("female", "male")
    notes = list(reply.provenance.parameters["notes"])
    assert "nationality: English -> GB" in notes
