"""A local EVM chain: anvil (npm ``@foundry-rs/anvil-linux-amd64``) on a random loopback port.

Used by the local stack and by the test fixtures::

    with Anvil.start() as chain:
        settings = MintSettings(mint_rpc_url=chain.url, mint_chain_id=chain.chain_id)

``python -m services.mint.anvil [--port 8545] [--state FILE]`` runs one in the foreground.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# anvil's first dev account (from its public default mnemonic): not a secret, dev chains only.
DEV_ACCOUNT = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
DEV_PRIVATE_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def anvil_binary() -> str:
    """The anvil binary: $GANFOLK_ANVIL_BIN, node_modules, then $PATH."""
    candidates = [
        os.environ.get("GANFOLK_ANVIL_BIN", ""),
        str(ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"),
        shutil.which("anvil") or "",
    ]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    raise FileNotFoundError(
        "anvil not found: run `npm ci` in the repository root (@foundry-rs/anvil-linux-amd64)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc(url: str, method: str, params: list[Any] | None = None, timeout: float = 5.0) -> Any:
    """One raw JSON-RPC call (anvil_*/evm_* methods web3 has no wrapper for)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


@dataclass
class Anvil:
    """A running anvil process."""

    port: int
    chain_id: int
    process: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        port: int | None = None,
        chain_id: int = 31337,
        state_file: Path | None = None,
        log_dir: Path | None = None,
        extra_args: list[str] | None = None,
        timeout: float = 20.0,
    ) -> Anvil:
        """Start anvil on ``port`` (a free one when None); ``state_file`` keeps the chain across restarts."""
        binary = anvil_binary()
        log_dir = log_dir or Path(tempfile.mkdtemp(prefix="anvil-"))
        last = ""
        for _ in range(5 if port is None else 1):
            p = port or _free_port()
            args = [binary, "--host", "127.0.0.1", "--port", str(p), "--chain-id", str(chain_id)]
            if state_file is not None:
                args += ["--state", str(state_file)]
            args += extra_args or []
            log_path = log_dir / f"anvil-{p}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            chain = cls(p, chain_id, proc, log_path, args)
            if chain._wait_ready(timeout):
                return chain
            chain.stop()
            last = chain.log_tail()
        raise RuntimeError(f"anvil did not start; log:\n{last}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                rpc(self.url, "eth_chainId", timeout=1.0)
                return True
            time.sleep(0.05)
        return False

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        return rpc(self.url, method, params)

    def stop(self) -> None:
        """Stop anvil (SIGTERM, so --state is dumped), killing it after 10 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> Anvil:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local anvil chain for GANfolk minting.")
    parser.add_argument("--port", type=int, default=8545)
    parser.add_argument("--chain-id", type=int, default=31337)
    parser.add_argument("--state", type=Path, default=None, help="persist the chain in this file")
    args = parser.parse_args(argv)
    chain = Anvil.start(args.port, args.chain_id, args.state)
    print(f"anvil listening on {chain.url} (chain id {chain.chain_id}); Ctrl-C stops it", flush=True)
    try:
        chain.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        chain.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
