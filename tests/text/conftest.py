"""Text-service fixtures: the real local LLM (SmolLM2-135M on xllamacpp), the service against it,
and a scripted OpenAI-compatible loopback server for failures a real server won't give on demand."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ganfolk.v1 import text_pb2_grpc
from services.text.local_llm import LocalLLM
from services.text.main import SERVICE
from services.text.names import NameSource
from services.text.notability import NotabilityChecker
from tests.fixtures.nats import free_port
from tests.fixtures.services import serving

WORDNET = Path("/usr/share/wordnet")


@pytest.fixture(scope="session")
def local_llm() -> Iterator[LocalLLM]:
    llm = LocalLLM(free_port(), threads=2, parallel=2)
    llm.start()
    yield llm
    llm.stop()


@pytest.fixture(scope="session")
def notability() -> NotabilityChecker:
    if not (WORDNET / "data.noun").is_file():
        pytest.fail("WordNet is not installed: apt-get install -y wordnet-base")
    return NotabilityChecker(WORDNET)


@pytest.fixture(scope="session")
def name_source() -> NameSource:
    """names-dataset loaded once for the whole session (about 2 GB and 15 s); every NameSource
    and TextCore of the session shares the loaded data."""
    source = NameSource()
    if source.dataset() is None:
        pytest.fail("names-dataset is not installed (make setup installs it)")
    return source


@pytest_asyncio.fixture(scope="session")
async def text_stub(local_llm: LocalLLM, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """The text service over gRPC, against the real local LLM."""
    async with serving(
        SERVICE,
        worker_enabled=False,
        store_url=str(tmp_path_factory.mktemp("text-store")),
        text_llm_base_url=local_llm.base_url,
        text_llm_timeout_seconds=120,
        text_max_attempts=2,
        text_wikipedia_api_url="",  # never Wikipedia from the tests (see tests/conftest.py)
    ) as (_, channel):
        yield text_pb2_grpc.TextServiceStub(channel)


class Scripted:
    """An OpenAI-compatible /v1/chat/completions on loopback that plays a script.

    Each step is a string (the answer), an int (an HTTP error status), ``("error", status,
    message)``, ``("sleep", s)`` (answer
    late), ``("raw", body)`` or a function of the request body that returns the answer (a model
    that reacts to what it is sent); the last step repeats. ``requests`` records the JSON bodies.
    """

    def __init__(self) -> None:
        self.script: list[Any] = ["Larissa Moura"]
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with scripted.lock:
                    scripted.requests.append(body)
                    step = scripted.script.pop(0) if len(scripted.script) > 1 else scripted.script[0]
                if callable(step):
                    step = step(body)
                if isinstance(step, tuple) and step[0] == "sleep":
                    time.sleep(step[1])
                    step = "Larissa Moura"
                if isinstance(step, tuple) and step[0] == "error":  # ("error", status, message)
                    payload = json.dumps({"error": {"message": step[2], "type": "x"}}).encode()
                    self.send_response(step[1])
                elif isinstance(step, int):
                    payload = json.dumps({"error": {"message": f"scripted {step}", "type": "x"}}).encode()
                    self.send_response(step)
                elif isinstance(step, tuple) and step[0] == "raw":
                    payload = step[1].encode()
                    self.send_response(200)
                else:
                    payload = json.dumps(
                        {
                            "id": "x",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body.get("model", "m"),
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": step},
                                }
                            ],
                        }
                    ).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def play(self, *steps: Any) -> None:
        with self.lock:
            self.script = list(steps)
            self.requests.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def scripted_server() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


@pytest.fixture
def scripted(scripted_server: Scripted) -> Scripted:
    scripted_server.play("Larissa Moura")
    return scripted_server
