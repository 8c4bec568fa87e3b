"""Mint test fixtures: a real anvil chain, minters on fresh contracts, images.

Import into a test module (``from tests.mint.fixtures import *``): no conftest needed.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_account import Account

from ganfolk.runtime.images import inline_ref
from ganfolk.runtime.storage import LocalStore
from ganfolk.v1 import common_pb2
from services.mint.anvil import DEV_PRIVATE_KEY, Anvil
from services.mint.chain import forget_signers
from services.mint.config import MintSettings
from services.mint.core import Minter, load_minter

__all__ = [
    "DEV_KEY",
    "SECOND_KEY",
    "anvil",
    "fresh_anvil",
    "image",
    "ipfs_s3",
    "make_minter",
    "mint_settings",
    "pinning_service",
    "store",
]

DEV_KEY = DEV_PRIVATE_KEY
# anvil's second dev account.
SECOND_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
SECOND_ACCOUNT = Account.from_key(SECOND_KEY).address


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    """One anvil for the session; every test deploys its own contract on it."""
    chain = Anvil.start(log_dir=tmp_path_factory.mktemp("anvil"))
    yield chain
    chain.stop()


@pytest.fixture
def fresh_anvil(tmp_path: Path) -> Iterator[Anvil]:
    """An anvil of this test's own (to stop it, or to change its mining)."""
    chain = Anvil.start(log_dir=tmp_path)
    yield chain
    chain.stop()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


@pytest.fixture
def mint_settings(anvil: Anvil, tmp_path: Path) -> Callable[..., MintSettings]:
    def make(**overrides: Any) -> MintSettings:
        values: dict[str, Any] = {
            "mint_rpc_url": anvil.url,
            "mint_chain_id": anvil.chain_id,
            "mint_private_key": DEV_KEY,
            "state_dir": tmp_path / "state",
            # The store the `store` fixture opens: collection metadata lands beside the tokens'.
            "store_url": str(tmp_path / "objects"),
            "mint_receipt_timeout_s": 20.0,
        }
        values.update(overrides)
        return MintSettings(**values)

    return make


@pytest.fixture
def make_minter(mint_settings: Callable[..., MintSettings]) -> Iterator[Callable[..., Minter]]:
    """Minters on this test's contract (deployed by the first one, reused by the next)."""

    def make(**overrides: Any) -> Minter:
        return load_minter(mint_settings(**overrides))

    yield make
    forget_signers()


@pytest.fixture
def image() -> common_pb2.ImageRef:
    rng = np.random.default_rng(7)
    return inline_ref(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))


# --------------------------------------------------------------------------- IPFS providers


def reference_cid(data: bytes) -> str:
    """The CIDv1 Debian's ``ipfs_cid`` program (an independent implementation) gives ``data``."""
    program = shutil.which("ipfs_cid")
    assert program, "the ipfs_cid program is missing: apt-get install ipfs-cid (scripts/setup.sh does)"
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        out = subprocess.run([program, f.name], capture_output=True, text=True, check=True, timeout=60)
    return str(json.loads(out.stdout)["CIDv1"])


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@dataclass
class IpfsS3Shim:
    """A loopback S3 endpoint in front of moto that acts as an S3-compatible IPFS pinning bucket.

    moto stores the objects; the shim adds what such providers add: the object's CID in its
    metadata (``x-amz-meta-cid``) on HEAD, computed by the ``ipfs_cid`` program from the
    stored bytes (not by our code). ``mode`` "v0" answers CIDv0 as some providers do;
    "wrong" answers another file's CID.
    """

    server: _Server
    mode: str = "v1"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


def _start_shim(upstream: str, fetch: Callable[[str, str], bytes]) -> IpfsS3Shim:
    host, port = upstream.split(":")
    shim_box: list[IpfsS3Shim] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            extra: dict[str, str] = {}
            parts = urllib.parse.urlsplit(self.path)
            if (
                self.command == "HEAD"
                and resp.status == 200
                and not parts.query
                and parts.path.count("/") >= 2
            ):
                bucket, key = urllib.parse.unquote(parts.path).lstrip("/").split("/", 1)
                data = fetch(bucket, key)
                mode = shim_box[0].mode
                cid = reference_cid(b"another file" if mode == "wrong" else data)
                if mode == "v0":
                    program = shutil.which("ipfs_cid") or "ipfs_cid"
                    with tempfile.NamedTemporaryFile() as f:
                        f.write(data)
                        f.flush()
                        out = subprocess.run([program, f.name], capture_output=True, text=True, check=True)
                    cid = json.loads(out.stdout)["CIDv0"]
                extra["x-amz-meta-cid"] = cid
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            for k, v in extra.items():
                self.send_header(k, v)
            if self.command == "HEAD":
                self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
            else:
                self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

    server = _Server(("127.0.0.1", 0), Handler)
    shim = IpfsS3Shim(server)
    shim_box.append(shim)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return shim


@pytest.fixture
def ipfs_s3(s3_server: Any) -> Iterator[tuple[IpfsS3Shim, str]]:
    """(shim, bucket) of an emulated S3-compatible IPFS pinning bucket."""
    bucket = f"ipfs-{uuid.uuid4().hex[:12]}"
    s3_server.raw_client().make_bucket(bucket)
    raw = s3_server.raw_client()

    def fetch(bucket: str, key: str) -> bytes:
        # A signed read: moto refuses anonymous ones on a private bucket.
        resp = raw.get_object(bucket, key)
        try:
            return bytes(resp.read())
        finally:
            resp.close()
            resp.release_conn()

    shim = _start_shim(s3_server.endpoint, fetch)
    yield shim, bucket
    shim.server.shutdown()
    shim.server.server_close()


@dataclass
class PinningService:
    """An IPFS Pinning Service API provider on loopback (the standard's /pins endpoints).

    It "holds the bytes" by reading them from ``origin`` (the object store our publisher
    writes the copy to, standing in for the IPFS peers in the pin's origins) and pins a CID
    only when the ``ipfs_cid`` program agrees the bytes have it; otherwise the pin fails.
    """

    server: _Server
    token: str
    origin: Path | None = None
    pins: dict[str, dict[str, Any]] = field(default_factory=dict)
    pinned: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _start_pinning(token: str) -> PinningService:
    box: list[PinningService] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {box[0].token}":
                self._reply(401, {"error": {"reason": "UNAUTHORIZED"}})
                return False
            return True

        def _advance(self, status: dict[str, Any]) -> None:
            svc = box[0]
            cid = status["pin"]["cid"]
            if status["status"] != "queued":
                return
            ok = True
            if svc.origin is not None:
                path = svc.origin / "mint" / "ipfs" / cid
                ok = path.exists() and reference_cid(path.read_bytes()) == cid
            status["status"] = "pinned" if ok else "failed"
            if ok:
                svc.pinned.add(cid)

        def do_GET(self) -> None:
            if not self._authorised():
                return
            parts = urllib.parse.urlsplit(self.path)
            svc = box[0]
            if parts.path == "/pins":
                query = urllib.parse.parse_qs(parts.query)
                cids = set(",".join(query.get("cid", [])).split(","))
                states = set(",".join(query.get("status", ["pinned"])).split(","))
                found = [p for p in svc.pins.values() if p["pin"]["cid"] in cids and p["status"] in states]
                self._reply(200, {"count": len(found), "results": found})
            elif parts.path.startswith("/pins/") and parts.path[6:] in svc.pins:
                status = svc.pins[parts.path[6:]]
                self._advance(status)
                self._reply(200, status)
            else:
                self._reply(404, {"error": {"reason": "NOT_FOUND"}})

        def do_POST(self) -> None:
            if not self._authorised():
                return
            pin = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            requestid = uuid.uuid4().hex
            status = {
                "requestid": requestid,
                "status": "queued",
                "created": "2026-01-01T00:00:00Z",
                "pin": pin,
                "delegates": ["/ip4/127.0.0.1/tcp/4001/p2p/QmProvider"],
            }
            box[0].pins[requestid] = status
            self._reply(202, status)

    server = _Server(("127.0.0.1", 0), Handler)
    svc = PinningService(server, token)
    box.append(svc)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return svc


@pytest.fixture
def pinning_service() -> Iterator[PinningService]:
    svc = _start_pinning(f"token-{uuid.uuid4().hex}")
    yield svc
    svc.server.shutdown()
    svc.server.server_close()
