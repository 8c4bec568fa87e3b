"""The "no celebrities" check against WordNet's people (Debian wordnet-base)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from services.text.notability import NotabilityChecker


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


@pytest.fixture
def mediawiki() -> Iterator[str]:
    """A loopback stand-in of the MediaWiki query API knowing one article."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            title = parse_qs(urlparse(self.path).query)["titles"][0]
            page = {"title": title} if title == "Frida Kahlo" else {"title": title, "missing": True}
            body = json.dumps({"query": {"pages": [page]}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/w/api.php"
    server.shutdown()
    server.server_close()


def test_wikipedia_api_when_configured(mediawiki: str, notability: NotabilityChecker) -> None:
    checker = copy.copy(notability)
    checker.wikipedia_api_url, checker.wikipedia_timeout = mediawiki, 2
    assert checker.check("Frida Kahlo") == "Wikipedia: Frida Kahlo"  # not in WordNet
    assert checker.check("Sophia Santos") is None
    down = copy.copy(notability)
    down.wikipedia_api_url, down.wikipedia_timeout = "http://127.0.0.1:9/api.php", 1
    assert down.check("Sophia Santos") is None  # unreachable: logged, WordNet still answers
    assert down.check("Claude Monet") is not None
