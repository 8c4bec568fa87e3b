"""What PrepareDataset may read and where it may write, over real gRPC.

Local folders are read only under GANFOLK_ALIGN_LOCAL_SOURCE_ROOTS (or inside a local store),
skipped-file records never carry a byte of the file, an unreadable file or folder is a clear
record or error rather than INTERNAL, and a direct call never writes into a job's folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from ganfolk.runtime.storage import ObjectStore, open_store
from ganfolk.v1 import align_pb2, align_pb2_grpc
from services.align.main import SERVICE
from tests.align.helpers import encode, no_face
from tests.fixtures.services import serving, wait_serving

# A file that looks like /etc/shadow: its first bytes are what the old skip reason quoted.
SECRET = b"root:*:20054:0:99999:7:::SECRET-MARKER-5c1e\n"
FORBIDDEN = (b":*:", b"SECRET-MARKER", SECRET[:8].hex(" ").encode(), SECRET[:8].hex().encode())


def all_bytes(store: ObjectStore, prefix: str = "") -> bytes:
    """Every object under ``prefix``, keys included, as one blob to search."""
    return b"\n".join(info.key.encode() + b"\n" + store.get(info.key) for info in store.list(prefix))


async def prepare(
    stub: align_pb2_grpc.AlignServiceStub, source: str, destination: str
) -> list[align_pb2.PrepareDatasetResponse]:
    request = align_pb2.PrepareDatasetRequest(source=source, destination=destination)
    return [m async for m in stub.PrepareDataset(request, timeout=120)]


async def refused(
    stub: align_pb2_grpc.AlignServiceStub, source: str, destination: str = "sets/x"
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await prepare(stub, source, destination)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return err.value


async def test_default_settings_read_no_local_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GANFOLK_ALIGN_LOCAL_SOURCE_ROOTS", raising=False)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "coffee.png").write_bytes(encode(no_face()))
    store_url = str(tmp_path / "objects")
    store = open_store(store_url)
    job_set = store.put("jobs/x/set/manifest.json", b'{"the": "job\'s own"}')
    store.put("raw/coffee.png", encode(no_face()))
    async with serving(SERVICE, store_url=store_url, worker_enabled=False) as (_, channel):
        stub = align_pb2_grpc.AlignServiceStub(channel)
        for source in ("/etc", "file:///", "file:///etc/", str(raw), f"file://{raw}"):
            err = await refused(stub, source)
            details = err.details() or ""
            assert "GANFOLK_ALIGN_LOCAL_SOURCE_ROOTS is not set" in details and "upload" in details
        err = await refused(stub, "https://example.com/photos")
        assert "not supported" in (err.details() or "")

        # The store's own folder is the store: readable, and a direct run lands under direct/.
        messages = await prepare(stub, store.uri("raw"), "sets/from-store")
        assert messages[-1].done and messages[-1].skipped == 1
        assert messages[-1].manifest_uri == store.uri("direct/sets/from-store/manifest.json")

        # A direct call may not write a dataset into a job's folder.
        for destination in ("jobs/x/set", store.uri("jobs/x/set")):
            err = await refused(stub, store.uri("raw"), destination)
            assert "only the tasks of that job write" in (err.details() or "")
    assert store.get("jobs/x/set/manifest.json", job_set.sha256) == b'{"the": "job\'s own"}'
    assert [i.key for i in store.list("jobs/")] == ["jobs/x/set/manifest.json"]
    assert [i.key for i in store.list("direct/sets/x")] == []


async def test_skipped_records_never_hold_file_content(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "shadow").write_bytes(SECRET)
    (allowed / "sub" / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + SECRET)  # PNG magic, then the secret
    (allowed / "sub" / "cut.png").write_bytes(encode(no_face())[:300] + SECRET)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(SECRET)
    (allowed / "link.png").symlink_to(outside / "secret.png")
    os.mkfifo(allowed / "pipe.png")  # not a photo, and reading it would block: left out
    monkeypatch.setenv("GANFOLK_ALIGN_LOCAL_SOURCE_ROOTS", str(allowed))
    store_url = str(tmp_path / "objects")
    async with serving(SERVICE, store_url=store_url, worker_enabled=False) as (_, channel):
        stub = align_pb2_grpc.AlignServiceStub(channel)
        messages = await prepare(stub, str(allowed), "sets/s")
        for source in ("file:///", "/etc", str(outside)):
            err = await refused(stub, source)
            assert "outside the folders this service may read" in (err.details() or "")
    last = messages[-1]
    assert last.done and (last.total, last.processed, last.skipped) == (4, 0, 4)
    assert {m.current for m in messages[:-1]} == {"shadow", "link.png", "sub/fake.png", "sub/cut.png"}
    store = open_store(store_url)
    manifest = json.loads(store.get_uri(last.manifest_uri))
    reasons = {s["source"]: s["reason"] for s in manifest["skipped_files"]}
    assert reasons["shadow"].startswith("not an image: 44 bytes")
    assert reasons["link.png"] == "unreadable: a link to a file outside the allowed folders"
    assert reasons["sub/fake.png"].startswith("not an image: 52 bytes")
    assert reasons["sub/cut.png"].startswith(("corrupt image", "not an image"))
    stored = all_bytes(store) + b"".join(m.SerializeToString() for m in messages)
    for forbidden in FORBIDDEN:
        assert forbidden not in stored, forbidden


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serving_as_nobody(folder: Path, roots: Path) -> AsyncIterator[grpc.aio.Channel]:
    """``ganfolk serve align`` in its own process, as an unprivileged user when this one is root,
    so that file permissions apply to it as they do in a deployment."""
    port = _free_port()
    command = [sys.executable, "-m", "ganfolk.cli", "serve", "align", "--host", "127.0.0.1"]
    command += [
        "--port",
        str(port),
        "--store-url",
        str(folder / "objects"),
        "--no-worker",
        "--metrics-port",
        "0",
    ]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop privileges to make a file unreadable")
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "GANFOLK_ALIGN_LOCAL_SOURCE_ROOTS": str(roots),
    }
    log = (folder / "server.log").open("wb")
    proc = await asyncio.create_subprocess_exec(*command, env=env, stdout=log, stderr=log)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        waiter = asyncio.ensure_future(wait_serving(channel, timeout=120))
        exited = asyncio.ensure_future(proc.wait())
        await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            waiter.cancel()
            pytest.fail(f"align server exited: {(folder / 'server.log').read_text()[-2000:]}")
        exited.cancel()
        waiter.result()
        yield channel
    finally:
        await channel.close()
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def test_unreadable_files_and_folders_are_clear_not_internal() -> None:
    # Not under pytest's tmp_path: its parent is private to root, and the server runs as nobody.
    folder = Path(tempfile.mkdtemp(prefix="align-perm-"))
    try:
        folder.chmod(0o755)
        (folder / "objects").mkdir(mode=0o777)
        (folder / "objects").chmod(0o777)
        allowed = folder / "allowed"
        (allowed / "private").mkdir(parents=True)
        (allowed / "ok.png").write_bytes(encode(no_face()))
        (allowed / "locked.png").write_bytes(SECRET)
        (allowed / "locked.png").chmod(0o000)
        (allowed / "private" / "x.png").write_bytes(SECRET)
        (allowed / "private").chmod(0o000)
        (folder / "closed").mkdir(mode=0o000)
        (allowed / "closed-link").symlink_to(folder / "closed")
        allowed.chmod(0o755)
        async with serving_as_nobody(folder, allowed) as channel:
            stub = align_pb2_grpc.AlignServiceStub(channel)
            messages = await prepare(stub, str(allowed), "sets/p")
            # The source folder itself unreadable: a clear INVALID_ARGUMENT, not INTERNAL.
            err = await refused(stub, str(allowed / "private"))
            assert "permission denied" in (err.details() or "")
        last = messages[-1]
        assert last.done and (last.total, last.processed, last.skipped) == (3, 0, 3)
        store = open_store(str(folder / "objects"))
        manifest = json.loads(store.get_uri(last.manifest_uri))
        reasons = {s["source"]: s["reason"] for s in manifest["skipped_files"]}
        assert reasons == {
            "locked.png": "unreadable: permission denied",
            "ok.png": "no face found by the dlib hog detector",
            "private/": "unreadable: folder: permission denied",
        }
        stored = all_bytes(store) + b"".join(m.SerializeToString() for m in messages)
        for forbidden in FORBIDDEN:
            assert forbidden not in stored, forbidden
    finally:
        for path in (folder / "closed", allowed / "private", allowed / "locked.png"):
            with contextlib.suppress(OSError):
                path.chmod(0o700)
        shutil.rmtree(folder, ignore_errors=True)
