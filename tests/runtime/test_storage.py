"""Tests of ganfolk.runtime.storage against a real S3-API server (moto) and the filesystem."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3

from ganfolk.runtime.settings import ConfigError
from ganfolk.runtime.storage import (
    IntegrityError,
    LocalStore,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StorageError,
    open_store,
    parse_uri,
    sha256_hex,
    validate_key,
)
from tests.fixtures.s3 import S3Server, unique_bucket_name

PNG_ISH = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 37


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


def corrupt(store: ObjectStore, key: str, data: bytes, s3_server: S3Server | None) -> None:
    """Replace an object's bytes behind the store's back, keeping its stored sha256."""
    if isinstance(store, S3Store):
        assert s3_server is not None
        old = store.stat(key)
        raw = s3_server.raw_client()
        raw.put_object(store.bucket, key, io.BytesIO(data), len(data), metadata={"sha256": old.sha256})
        assert store.stat(key).sha256 == old.sha256
    else:
        assert isinstance(store, LocalStore)
        path = store.root / key
        path.write_bytes(data)


# --------------------------------------------------------------------------- both stores


def test_round_trip_with_hash(store: ObjectStore) -> None:
    info = store.put("jobs/j1/sample/0001.png", PNG_ISH, "image/png", {"job-id": "j1", "stage": "sample"})
    assert info == ObjectInfo(
        key="jobs/j1/sample/0001.png",
        uri=store.uri("jobs/j1/sample/0001.png"),
        size=len(PNG_ISH),
        sha256=sha256_hex(PNG_ISH),
        content_type="image/png",
        metadata={"job-id": "j1", "stage": "sample"},
    )
    assert store.get("jobs/j1/sample/0001.png") == PNG_ISH
    assert store.get("jobs/j1/sample/0001.png", expected_sha256=info.sha256) == PNG_ISH
    assert store.get("jobs/j1/sample/0001.png", expected_sha256=info.sha256.upper()) == PNG_ISH  # type: ignore[union-attr]
    assert store.stat("jobs/j1/sample/0001.png") == info
    assert store.get_uri(info.uri, info.sha256) == PNG_ISH


def test_overwrite_empty_and_bytes_like(store: ObjectStore) -> None:
    store.put("a/b", b"first")
    info = store.put("a/b", bytearray(b"second"))
    assert store.get("a/b") == b"second"
    assert info.sha256 == sha256_hex(b"second")
    assert store.stat("a/b").content_type == "application/octet-stream"
    store.put("empty", memoryview(b""))
    assert store.get("empty") == b""
    assert store.stat("empty").size == 0


def test_stat_exists_list_delete(store: ObjectStore) -> None:
    keys = ["jobs/1/a.png", "jobs/1/b.png", "jobs/10/a.png", "jobs/2/a.png", "other.txt"]
    for k in reversed(keys):
        store.put(k, k.encode(), "text/plain")
    assert store.exists("jobs/1/a.png")
    assert not store.exists("jobs/1/c.png")
    assert not store.exists("jobs/1")  # a "directory" is not an object
    st = store.stat("jobs/10/a.png")
    assert (st.size, st.sha256, st.content_type) == (13, sha256_hex(b"jobs/10/a.png"), "text/plain")

    assert [i.key for i in store.list()] == keys
    assert [i.key for i in store.list("jobs/1/")] == ["jobs/1/a.png", "jobs/1/b.png"]
    # a prefix is a raw string prefix, as in S3
    assert [i.key for i in store.list("jobs/1")] == ["jobs/1/a.png", "jobs/1/b.png", "jobs/10/a.png"]
    assert [i.key for i in store.list("jobs/1/a")] == ["jobs/1/a.png"]
    assert list(store.list("nothing/")) == []
    listed = {i.key: i for i in store.list("jobs/")}
    assert listed["jobs/2/a.png"] == store.stat("jobs/2/a.png")

    store.delete("jobs/1/a.png")
    assert not store.exists("jobs/1/a.png")
    with pytest.raises(ObjectNotFound):
        store.stat("jobs/1/a.png")
    store.delete("jobs/1/a.png")  # idempotent, like S3
    assert [i.key for i in store.list("jobs/1/")] == ["jobs/1/b.png"]


def test_missing_object(store: ObjectStore, tmp_path: Path) -> None:
    for call in (
        lambda: store.get("no/such.png"),
        lambda: store.get("no/such.png", sha256_hex(b"x")),
        lambda: store.stat("no/such.png"),
        lambda: store.get_file("no/such.png", tmp_path / "out"),
    ):
        with pytest.raises(ObjectNotFound) as exc_info:
            call()
        err = exc_info.value
        assert err.key == "no/such.png"
        assert isinstance(err, KeyError) and isinstance(err, StorageError)
        assert "no/such.png" in str(err)
    assert not (tmp_path / "out").exists()


def test_corruption_detected_on_read(
    store: ObjectStore, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    s3_server = request.getfixturevalue("s3_server") if isinstance(store, S3Store) else None
    info = store.put("img/x.png", PNG_ISH, "image/png")
    bad = PNG_ISH[:-1] + b"\x00"
    corrupt(store, "img/x.png", bad, s3_server)
    with pytest.raises(IntegrityError) as exc_info:
        store.get("img/x.png")
    err = exc_info.value
    assert (err.key, err.expected, err.actual) == ("img/x.png", info.sha256, sha256_hex(bad))
    assert "img/x.png" in str(err) and str(info.sha256) in str(err) and sha256_hex(bad) in str(err)
    # the hash carried in a message is checked too
    with pytest.raises(IntegrityError):
        store.get("img/x.png", info.sha256)
    # get_file refuses as well and leaves the destination alone
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "dest.png"
    dest.write_bytes(b"previous")
    with pytest.raises(IntegrityError):
        store.get_file("img/x.png", dest)
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in out.iterdir()] == ["dest.png"]  # no temp file left behind
    # whoever knows the new content's hash may still read it
    assert store.get("img/x.png", sha256_hex(bad)) == bad


def test_expected_sha256_mismatch(store: ObjectStore) -> None:
    store.put("k", b"hello")
    wrong = sha256_hex(b"world")
    with pytest.raises(IntegrityError) as exc_info:
        store.get("k", wrong)
    assert (exc_info.value.expected, exc_info.value.actual) == (wrong, sha256_hex(b"hello"))
    with pytest.raises(ValueError, match="sha256"):
        store.get("k", "not-a-hash")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs",
        "a/../b",
        "..",
        "../x",
        "a/./b",
        "a//b",
        "trailing/",
        "back\\slash",
        "nul\x00",
        "new\nline",
        ".ganfolk-meta/x",
        "x" * 1025,
    ],
)
def test_bad_keys(store: ObjectStore, key: str) -> None:
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.stat(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.uri(key),
        lambda: store.presigned_url(key),
    ):
        with pytest.raises(ValueError):
            call()


def test_good_unusual_keys(store: ObjectStore) -> None:
    for key in ["sp ace/ü.png", "a..b/c", ".hidden", "q?x#y", "x" * 200]:
        validate_key(key)
        store.put(key, key.encode())
        assert store.get(key) == key.encode()
        info = store.stat(key)
        assert store.key_from_uri(info.uri) == key
        assert parse_uri(info.uri)[2].endswith(key)


def test_bad_prefix_and_metadata(store: ObjectStore) -> None:
    for prefix in ["/x", "a/../", "a//"]:
        with pytest.raises(ValueError):
            list(store.list(prefix))
    for meta in [{"Upper": "x"}, {"sha256": "x"}, {"k": "ünicode"}, {"k": " padded"}, {"k_u": "x"}]:
        with pytest.raises(ValueError):
            store.put("k", b"x", metadata=meta)
    with pytest.raises(ValueError):
        store.put("k", b"x", content_type="")
    assert not store.exists("k")


def test_uri_and_key_from_uri(store: ObjectStore, tmp_path: Path) -> None:
    info = store.put("jobs/j/x.png", b"x")
    assert store.key_from_uri(info.uri) == "jobs/j/x.png"
    if isinstance(store, S3Store):
        assert info.uri == f"s3://{store.bucket}/jobs/j/x.png"
        assert parse_uri(info.uri) == ("s3", store.bucket, "jobs/j/x.png")
        foreign = ["s3://other-bucket/jobs/j/x.png", (tmp_path / "x").as_uri()]
    else:
        assert isinstance(store, LocalStore)
        assert info.uri == (store.root / "jobs/j/x.png").as_uri()
        assert info.uri.startswith("file:///")
        assert parse_uri(info.uri) == ("file", "/", str(store.root / "jobs/j/x.png")[1:])
        foreign = [(tmp_path / "elsewhere.png").as_uri(), "s3://bucket/jobs/j/x.png"]
    for uri in [*foreign, "http://h/b/k", "s3://bucket", "s3://bucket/../x", "nonsense"]:
        with pytest.raises(ValueError):
            store.key_from_uri(uri)


def test_presigned_url_downloads(store: ObjectStore) -> None:
    store.put("share/me.png", PNG_ISH, "image/png")
    url = store.presigned_url("share/me.png", expires=timedelta(minutes=5))
    if isinstance(store, S3Store):
        assert url.startswith(f"http://{store.endpoint}/{store.bucket}/share/me.png?")
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    else:
        assert url == store.uri("share/me.png")  # documented: the file:// URI itself
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == PNG_ISH
    if isinstance(store, S3Store):
        with pytest.raises(ValueError):
            store.presigned_url("share/me.png", expires=timedelta(days=8))  # S3 allows at most 7
    else:
        with pytest.raises(ObjectNotFound):
            store.presigned_url("share/missing.png")


def test_put_file_get_file(store: ObjectStore, tmp_path: Path) -> None:
    # > 5 MiB: the minio SDK switches to a multipart upload.
    big = os.urandom(6 * 1024 * 1024 + 123)
    src = tmp_path / "src.bin"
    src.write_bytes(big)
    info = store.put_file("weights/big.bin", src, metadata={"kind": "weights"})
    assert (info.size, info.sha256) == (len(big), sha256_hex(big))
    assert store.stat("weights/big.bin") == info
    dest = tmp_path / "sub" / "dest.bin"
    dest.parent.mkdir()
    got = store.get_file("weights/big.bin", dest, expected_sha256=info.sha256)
    assert dest.read_bytes() == big
    assert (got.size, got.sha256, got.metadata) == (len(big), info.sha256, {"kind": "weights"})
    with pytest.raises(IntegrityError):
        store.get_file("weights/big.bin", tmp_path / "other.bin", expected_sha256=sha256_hex(b""))
    assert not (tmp_path / "other.bin").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dest.bin"]


def test_object_info_is_frozen(store: ObjectStore) -> None:
    info = store.put("k", b"v", metadata={"a": "b"})
    with pytest.raises(AttributeError):
        info.size = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        info.metadata["a"] = "c"  # type: ignore[index]
    assert hash(info) == hash(store.stat("k"))


async def test_async_callers_use_to_thread(store: ObjectStore) -> None:
    infos = await asyncio.gather(
        *(asyncio.to_thread(store.put, f"t/{i}", bytes([i]) * 100) for i in range(8))
    )
    datas = await asyncio.gather(*(asyncio.to_thread(store.get, i.key, i.sha256) for i in infos))
    assert datas == [bytes([i]) * 100 for i in range(8)]


# --------------------------------------------------------------------------- local store specifics


def test_local_layout_and_atomicity(local_store: LocalStore) -> None:
    local_store.put("a/b.png", b"data", "image/png")
    root = local_store.root
    assert (root / "a/b.png").read_bytes() == b"data"
    assert (root / ".ganfolk-meta/a/b.png.json").is_file()
    assert list((root / ".ganfolk-tmp").iterdir()) == []  # temp files were renamed away
    assert [i.key for i in local_store.list()] == ["a/b.png"]  # bookkeeping is not listed


def test_local_file_versus_directory_conflict(local_store: LocalStore) -> None:
    local_store.put("a", b"file")
    with pytest.raises(StorageError, match="directory"):
        local_store.put("a/b", b"nested")
    local_store.put("c/d", b"nested")
    with pytest.raises(StorageError):
        local_store.put("c", b"file")
    assert local_store.get("a") == b"file" and local_store.get("c/d") == b"nested"


def test_local_foreign_file_without_sidecar(local_store: LocalStore) -> None:
    (local_store.root / "dropped").mkdir()
    (local_store.root / "dropped/in.txt").write_bytes(b"by hand")
    info = local_store.stat("dropped/in.txt")
    assert (info.sha256, info.size, info.content_type) == (None, 7, "application/octet-stream")
    assert local_store.get("dropped/in.txt") == b"by hand"  # nothing stored to verify against
    with pytest.raises(IntegrityError):
        local_store.get("dropped/in.txt", sha256_hex(b"something else"))


def count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every ``os.fsync`` from now on, counted (and still done)."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


@pytest.mark.parametrize(
    ("level", "first", "sibling", "overwrite"),
    [
        # data file + new directory "a" (its entry in the root) + the new key's rename
        ("data", 3, 2, 1),
        # data + sidecar + "a" + ".ganfolk-meta/a" and ".ganfolk-meta" (once) + both renames
        ("full", 7, 4, 4),
        ("off", 0, 0, 0),
    ],
)
def test_local_fsyncs_per_put(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: str, first: int, sibling: int, overwrite: int
) -> None:
    store = LocalStore(tmp_path / level, fsync=level)
    calls = count_fsyncs(monkeypatch)
    counts = []
    for key in ("a/b.png", "a/c.png", "a/c.png"):
        before = len(calls)
        store.put(key, PNG_ISH, "image/png")
        counts.append(len(calls) - before)
    assert counts == [first, sibling, overwrite]
    assert store.get("a/c.png") == PNG_ISH and store.stat("a/b.png").sha256 == sha256_hex(PNG_ISH)


def test_local_data_level_syncs_new_directories_not_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a tree another process made, a new key costs data + its rename + the new dirs' entries."""
    (tmp_path / "s/jobs/j1").mkdir(parents=True)
    store = LocalStore(tmp_path / "s", fsync="data")
    calls = count_fsyncs(monkeypatch)
    store.put("jobs/j1/manifest/sample/t1.json", b"{}", "application/json")
    # data file, "manifest" in j1, "sample" in manifest, the key in sample
    assert len(calls) == 4
    before = len(calls)
    store.put("jobs/j1/manifest/sample/t2.json", b"{}", "application/json")
    assert len(calls) - before == 2


def test_local_fsync_level_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GANFOLK_STORE_FSYNC", raising=False)
    assert LocalStore(tmp_path / "a").durability == "data"
    monkeypatch.setenv("GANFOLK_STORE_FSYNC", "OFF")
    assert LocalStore(tmp_path / "b").durability == "off" and LocalStore(tmp_path / "b").fsync is False
    assert LocalStore(tmp_path / "c", fsync=True).durability == "full"  # the argument wins
    monkeypatch.setenv("GANFOLK_STORE_FSYNC", "sometimes")
    with pytest.raises(ValueError, match="GANFOLK_STORE_FSYNC"):
        LocalStore(tmp_path / "d")


def test_local_concurrent_puts_share_directory_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Puts into one directory at once need fewer directory syncs than puts, and all land."""
    store = LocalStore(tmp_path / "group", fsync="data")
    store.put("job/first.png", b"x")  # the directory exists and is known from here on
    calls = count_fsyncs(monkeypatch)
    barrier = threading.Barrier(8)

    def put(i: int) -> None:
        barrier.wait()
        store.put(f"job/seed-{i}.png", bytes([i]) * 50_000)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 8 + 1 <= len(calls) <= 8 + 8  # 8 data files, then 1..8 syncs of "job/"
    assert [store.get(f"job/seed-{i}.png") for i in range(8)] == [bytes([i]) * 50_000 for i in range(8)]


def test_dir_syncer_group_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Callers that arrive while a directory sync runs share the next one."""
    from ganfolk.runtime.storage import atomic

    release = threading.Event()
    synced: list[Path] = []

    def slow_fsync_dir(path: Path) -> None:
        synced.append(path)
        if len(synced) == 1:
            release.wait(10)

    monkeypatch.setattr(atomic, "fsync_dir", slow_fsync_dir)
    syncer = atomic.DirSyncer()
    threads = [threading.Thread(target=syncer.sync, args=(tmp_path,)) for _ in range(3)]
    threads[0].start()
    while not synced:  # the first sync is running
        threading.Event().wait(0.01)
    for t in threads[1:]:
        t.start()
    state = syncer._dirs[tmp_path]
    while state.requested < 3:  # both latecomers asked while it ran
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join(10)
    assert synced == [tmp_path, tmp_path]  # one for the first caller, one shared by the other two


def test_local_empty_sidecar_reads_as_no_metadata(local_store: LocalStore) -> None:
    """What a power loss may leave of an unsynced sidecar: the data stays readable and checkable."""
    local_store.put("a/b.png", PNG_ISH, "image/png")
    (local_store.root / ".ganfolk-meta/a/b.png.json").write_bytes(b"")
    assert local_store.stat("a/b.png").sha256 is None
    assert local_store.get("a/b.png", sha256_hex(PNG_ISH)) == PNG_ISH
    with pytest.raises(IntegrityError):
        local_store.get("a/b.png", sha256_hex(b"other"))
    (local_store.root / ".ganfolk-meta/a/b.png.json").write_bytes(b"{not json")
    with pytest.raises(StorageError, match="corrupt metadata"):
        local_store.get("a/b.png")


def test_local_concurrent_overwrites_never_look_corrupt(tmp_path: Path) -> None:
    """Readers racing writers of the same key see one version or the other, never a mismatch."""
    store = LocalStore(tmp_path / "race", fsync=False)
    versions = [bytes([v]) * 4096 for v in range(4)]
    store.put("hot", versions[0])
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            store.put("hot", versions[(i + n) % len(versions)])
            i += 1

    def reader() -> None:
        try:
            for _ in range(400):
                assert store.get("hot") in versions
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in writers + readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    for t in writers:
        t.join()
    assert errors == []
    assert store.get("hot") in versions  # and the final state is consistent


def _hammer(root: str, value: int, rounds: int) -> None:
    store = LocalStore(root, fsync=False)
    for _ in range(rounds):
        store.put("hot", bytes([value]) * 4096)


def test_local_concurrent_processes(tmp_path: Path) -> None:
    """The same across processes (the embedded mode runs every service as a process)."""
    import multiprocessing

    store = LocalStore(tmp_path / "race", fsync=False)
    store.put("hot", bytes([0]) * 4096)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(store.root), v, 200)) for v in (1, 2)]
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs) or reads < 50:
        assert store.get("hot")[0] in (0, 1, 2)
        reads += 1
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert store.get("hot")[0] in (1, 2)


# --------------------------------------------------------------------------- S3 specifics


def test_s3_metadata_on_the_wire(s3_store: S3Store, s3_server: S3Server) -> None:
    info = s3_store.put("m/x", b"abc", "text/plain", {"job-id": "j9"})
    st = s3_server.raw_client().stat_object(s3_store.bucket, "m/x")
    headers = {k.lower(): v for k, v in st.metadata.items()}
    assert headers["x-amz-meta-sha256"] == info.sha256
    assert headers["x-amz-meta-job-id"] == "j9"
    assert st.content_type == "text/plain"


def test_s3_foreign_object_without_hash(s3_store: S3Store, s3_server: S3Server) -> None:
    s3_server.raw_client().put_object(s3_store.bucket, "foreign", io.BytesIO(b"abc"), 3)
    assert s3_store.stat("foreign").sha256 is None
    assert s3_store.get("foreign") == b"abc"
    assert s3_store.get("foreign", sha256_hex(b"abc")) == b"abc"


def test_s3_ensure_bucket_is_idempotent(s3_server: S3Server) -> None:
    bucket = unique_bucket_name()
    first = s3_server.store(bucket)
    first.put("k", b"v")
    second = s3_server.store(bucket)  # bucket exists: no error, nothing lost
    second.ensure_bucket()
    assert second.get("k") == b"v"
    assert "secret" not in repr(second) and s3_server.secret_key not in repr(second)


def test_s3_missing_bucket_without_create(s3_server: S3Server) -> None:
    store = s3_server.store(unique_bucket_name(), create_bucket=False)
    with pytest.raises(StorageError, match="does not exist"):
        store.put("k", b"v")


def test_s3_unreachable_endpoint_is_storage_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        http = urllib3.PoolManager(retries=urllib3.Retry(total=0), timeout=2)
        with pytest.raises(StorageError):
            S3Store(f"127.0.0.1:{port}", "ak", "sk", "bucket", http_client=http)


class RecordingPool(urllib3.PoolManager):
    """A urllib3 pool that records the headers of every request the SDK sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:  # type: ignore[override]
        self.requests.append((method, url, {k.lower(): v for k, v in dict(kw.get("headers") or {}).items()}))
        return super().urlopen(method, url, redirect=redirect, **kw)


def test_s3_requests_carry_credentials(s3_server: S3Server) -> None:
    pool = RecordingPool()
    store = s3_server.store(http_client=pool)
    store.put("auth/x", b"x")
    store.get("auth/x")
    store.stat("auth/x")
    list(store.list())
    store.delete("auth/x")
    methods = {m for m, _, _ in pool.requests}
    assert {"PUT", "GET", "HEAD", "DELETE"} <= methods
    for method, url, headers in pool.requests:
        auth = headers.get("authorization", "")
        assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={s3_server.access_key}/"), (method, url)
        assert "Signature=" in auth and "x-amz-date" in headers and "x-amz-content-sha256" in headers


def test_s3_server_verifies_signatures(s3_auth_server: S3Server) -> None:
    """On a server that checks signatures, the right secret works and wrong ones fail."""
    bucket = unique_bucket_name("auth")
    good = s3_auth_server.store(bucket)
    good.put("k", b"signed")
    assert good.get("k") == b"signed"
    wrong_secret = s3_auth_server.store(bucket, secret_key="not-the-secret", create_bucket=False)
    with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
        wrong_secret.get("k")
    with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
        wrong_secret.put("k", b"forged")
    unknown = s3_auth_server.store(bucket, access_key="AKIAUNKNOWN000000000", create_bucket=False)
    with pytest.raises(StorageError, match="InvalidAccessKeyId"):
        unknown.stat("k")
    assert good.get("k") == b"signed"


# --------------------------------------------------------------------------- open_store / parse_uri


def test_open_store_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = open_store((tmp_path / "a").as_uri())
    assert isinstance(a, LocalStore) and a.root == tmp_path / "a"
    b = open_store(str(tmp_path / "b"), access_key="ignored", secret_key="ignored")
    assert isinstance(b, LocalStore) and b.root == tmp_path / "b"
    monkeypatch.chdir(tmp_path)
    c = open_store("rel/dir", fsync=False)
    assert isinstance(c, LocalStore) and c.root == tmp_path / "rel/dir" and c.fsync is False
    d = open_store(f"file://localhost{tmp_path}/d")
    assert isinstance(d, LocalStore) and d.root == tmp_path / "d"
    for bad in ["file://otherhost/x", "file:///x?y=1", "file:rel"]:
        with pytest.raises(ValueError):
            open_store(bad)


def test_open_store_s3_urls(s3_server: S3Server) -> None:
    ak, sk, ep = s3_server.access_key, s3_server.secret_key, s3_server.endpoint
    bucket = unique_bucket_name()

    s1 = open_store(f"s3://{bucket}?endpoint={ep}&secure=false", access_key=ak, secret_key=sk)
    assert isinstance(s1, S3Store)
    assert (s1.endpoint, s1.bucket, s1.secure) == (ep, bucket, False)
    s1.put("k", b"v")  # the bucket was created

    s2 = open_store(f"s3://{ak}:{sk}@{bucket}?endpoint={ep}&secure=0&region=us-east-1")
    assert isinstance(s2, S3Store) and s2.region == "us-east-1"
    assert s2.get("k") == b"v"

    s3 = open_store(f"http://{ep}/{bucket}", access_key=ak, secret_key=sk)
    assert isinstance(s3, S3Store) and (s3.endpoint, s3.bucket, s3.secure) == (ep, bucket, False)
    assert s3.get("k") == b"v"

    s4 = open_store(f"http://user%40x:p%2Fw@{ep}/{bucket}/")
    assert isinstance(s4, S3Store) and s4.get("k") == b"v"  # percent-decoded creds (moto accepts any)

    s5 = open_store(
        f"https://minio.example:9000/{bucket}", access_key="a", secret_key="b", create_bucket=False
    )
    assert isinstance(s5, S3Store) and (s5.endpoint, s5.secure) == ("minio.example:9000", True)

    s6 = open_store(f"s3://{bucket}", access_key="a", secret_key="b", create_bucket=False)
    assert isinstance(s6, S3Store) and (s6.endpoint, s6.secure) == ("s3.amazonaws.com", True)


@pytest.mark.parametrize(
    ("url", "kwargs", "exc"),
    [
        ("s3://bkt?endpoint=h:1&secure=maybe", {"access_key": "a", "secret_key": "b"}, ValueError),
        ("s3://bkt?endpoint=h:1&colour=blue", {"access_key": "a", "secret_key": "b"}, ValueError),
        ("s3://bkt/extra?endpoint=h:1", {"access_key": "a", "secret_key": "b"}, ValueError),
        ("http://h:1/", {"access_key": "a", "secret_key": "b"}, ValueError),  # no bucket
        ("http://h:1/b/c", {"access_key": "a", "secret_key": "b"}, ValueError),
        ("s3://Bad_Bucket?endpoint=h:1", {"access_key": "a", "secret_key": "b"}, ValueError),
        ("ftp://h/b", {}, ValueError),
        ("", {}, ValueError),
        ("s3://bkt?endpoint=h:1", {"acces_key": "typo"}, TypeError),
        ("s3://bkt?endpoint=h:1", {"fsync": True, "access_key": "a", "secret_key": "b"}, TypeError),
    ],
)
def test_open_store_rejects(url: str, kwargs: dict[str, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        open_store(url, **kwargs)


@pytest.fixture
def no_s3_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No GANFOLK_S3_* in the environment (a developer's shell may set them)."""
    for var in ("GANFOLK_S3_ACCESS_KEY", "GANFOLK_S3_SECRET_KEY", "GANFOLK_S3_REGION"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def signed_scopes(pool: RecordingPool) -> set[str]:
    """The ``Credential=<access key>/<date>/<region>/s3`` scopes the SDK signed with (date dropped)."""
    scopes = set()
    for _, _, headers in pool.requests:
        credential = headers["authorization"].split("Credential=")[1].split(",")[0]
        access_key, _date, region, service, _ = credential.split("/")
        scopes.add(f"{access_key}/{region}/{service}")
    return scopes


def test_open_store_credentials_from_env(s3_server: S3Server, no_s3_env: pytest.MonkeyPatch) -> None:
    no_s3_env.setenv("GANFOLK_S3_ACCESS_KEY", "env-access")
    no_s3_env.setenv("GANFOLK_S3_SECRET_KEY", "env-secret")
    pool = RecordingPool()
    store = open_store(
        f"s3://{unique_bucket_name()}?endpoint={s3_server.endpoint}&secure=false", http_client=pool
    )
    assert isinstance(store, S3Store)
    store.put("k", b"v")
    assert store.get("k") == b"v"
    assert signed_scopes(pool) == {"env-access/us-east-1/s3"}


def test_open_store_credentials_in_url_win_over_env(
    s3_auth_server: S3Server, no_s3_env: pytest.MonkeyPatch
) -> None:
    """On a server that checks signatures: URL credentials work although the environment's are wrong."""
    bucket = unique_bucket_name("url")
    s3_auth_server.store(bucket).put("k", b"signed")
    no_s3_env.setenv("GANFOLK_S3_ACCESS_KEY", "AKIAUNKNOWN000000000")
    no_s3_env.setenv("GANFOLK_S3_SECRET_KEY", "wrong")
    ak, sk, ep = s3_auth_server.access_key, s3_auth_server.secret_key, s3_auth_server.endpoint
    # AWS-style secrets hold "/" and "+": in a URL they are percent-encoded, as for any userinfo.
    quoted = f"{urllib.parse.quote(ak, safe='')}:{urllib.parse.quote(sk, safe='')}"
    assert open_store(f"http://{quoted}@{ep}/{bucket}", create_bucket=False).get("k") == b"signed"
    with pytest.raises(StorageError, match="InvalidAccessKeyId"):
        open_store(f"http://{ep}/{bucket}", create_bucket=False).get("k")
    # an explicit keyword beats both
    assert (
        open_store(f"http://{ep}/{bucket}", access_key=ak, secret_key=sk, create_bucket=False).get("k")
        == b"signed"
    )


def test_open_store_missing_credentials_name_the_variable(no_s3_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="GANFOLK_S3_ACCESS_KEY is required: the object store is s3://bkt"):
        open_store("s3://bkt?endpoint=h:1")
    no_s3_env.setenv("GANFOLK_S3_ACCESS_KEY", "a")
    with pytest.raises(ConfigError, match="GANFOLK_S3_SECRET_KEY is required"):
        open_store("http://h:1/bkt")
    no_s3_env.delenv("GANFOLK_S3_ACCESS_KEY")
    # a secret in the URL never reaches the message
    with pytest.raises(ConfigError, match="GANFOLK_S3_ACCESS_KEY is required") as caught:
        open_store("s3://:hunter2@bkt?endpoint=h:1")
    assert "hunter2" not in str(caught.value) and "s3://***@bkt" in str(caught.value)
    # file stores need no credentials
    assert isinstance(open_store("file:///tmp/ganfolk-no-creds"), LocalStore)


def test_open_store_region(s3_server: S3Server, no_s3_env: pytest.MonkeyPatch) -> None:
    """The region reaches the client: requests are signed for it and the bucket is created in it."""
    ak, sk, ep = s3_server.access_key, s3_server.secret_key, s3_server.endpoint
    no_s3_env.setenv("GANFOLK_S3_REGION", "eu-west-1")
    bucket = unique_bucket_name("region")
    pool = RecordingPool()
    store = open_store(f"http://{ak}:{sk}@{ep}/{bucket}", http_client=pool)
    assert isinstance(store, S3Store) and store.region == "eu-west-1"
    store.put("k", b"v")
    assert signed_scopes(pool) == {f"{ak}/eu-west-1/s3"}
    with urllib.request.urlopen(f"http://{ep}/{bucket}?location") as resp:
        assert b"eu-west-1" in resp.read()
    # the URL beats the environment, a keyword beats both; an empty value means "ask the server"
    url = f"s3://{ak}:{sk}@{bucket}?endpoint={ep}&secure=false"
    assert open_store(f"{url}&region=ap-south-1", create_bucket=False).region == "ap-south-1"  # type: ignore[attr-defined]
    assert (
        open_store(f"{url}&region=ap-south-1", region="us-west-2", create_bucket=False).region == "us-west-2"
    )  # type: ignore[attr-defined]
    assert open_store(f"{url}&region=", create_bucket=False).region is None  # type: ignore[attr-defined]
    no_s3_env.delenv("GANFOLK_S3_REGION")
    assert open_store(url, create_bucket=False).region is None  # type: ignore[attr-defined]


def test_parse_uri() -> None:
    assert parse_uri("s3://bkt/a/b.png") == ("s3", "bkt", "a/b.png")
    assert parse_uri("S3://bkt/a?b#c") == ("s3", "bkt", "a?b#c")  # s3 keys are raw
    assert parse_uri("file:///srv/obj/a%20b.png") == ("file", "/", "srv/obj/a b.png")
    for bad in [
        "s3://bkt",
        "s3://bkt/",
        "s3:///key",
        "file://host/x",
        "http://h/b/k",
        "no-scheme",
        "s3://b/../k",
    ]:
        with pytest.raises(ValueError):
            parse_uri(bad)


def test_sha256_hex() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_hex(memoryview(b"abc")) == sha256_hex(b"abc")
