"""The local store: objects as files in a directory tree (the embedded default)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat as _stat
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal

from ganfolk.runtime.hashing import CHUNK_BYTES, hash_file, sha256_hex
from ganfolk.runtime.storage.atomic import DirSyncer, atomic_write_chunks, write_temp
from ganfolk.runtime.storage.interface import (
    DEFAULT_CONTENT_TYPE,
    RESERVED_PREFIX,
    BytesLike,
    IntegrityError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StrPath,
    check_sha256,
    parse_uri,
    validate_content_type,
    validate_key,
    validate_metadata,
    validate_prefix,
)

__all__ = ["FSYNC_ENV", "FSYNC_LEVELS", "LocalStore", "fsync_level"]

Durability = Literal["full", "data", "off"]
FSYNC_LEVELS: tuple[Durability, ...] = ("full", "data", "off")
FSYNC_ENV = "GANFOLK_STORE_FSYNC"
_DEFAULT_FSYNC: Durability = "data"
# One per process: puts of every LocalStore into one directory share its fsyncs.
_DIR_SYNCER = DirSyncer()


def fsync_level(value: bool | str | None = None) -> Durability:
    """The durability level from a ``fsync=`` argument, else ``GANFOLK_STORE_FSYNC``, else "data".

    ``True`` means "full" and ``False`` "off", as before there were levels.
    """
    if value is None:
        value = os.environ.get(FSYNC_ENV, "").strip().lower() or _DEFAULT_FSYNC
    if value is True:
        return "full"
    if value is False:
        return "off"
    if value not in FSYNC_LEVELS:
        raise ValueError(f"{FSYNC_ENV} (or fsync=) must be one of {', '.join(FSYNC_LEVELS)}, got {value!r}")
    return value  # type: ignore[return-value]


class LocalStore(ObjectStore):
    """Objects as files under ``root`` -- the embedded, one-machine default.

    * Data of key ``a/b.png`` is the file ``<root>/a/b.png``; its sha256, content
      type and user metadata are in ``<root>/.ganfolk-meta/a/b.png.json``.
    * Writes go to temp files in ``<root>/.ganfolk-tmp/`` and are renamed into place
      (``os.replace``), the sidecar first, then the data, so no reader ever sees a
      partial file.  The two renames happen under an exclusive ``flock`` on one of
      64 lock files in ``<root>/.ganfolk-locks/`` (chosen by a hash of the key);
      readers take it shared while they open the data and read the sidecar.  So
      data and sidecar always pair up, across threads and processes, even with
      concurrent writers of one key; only real corruption raises
      :class:`IntegrityError`.  (A writer killed between its two renames leaves the
      new hash with the old data: that object reads as corrupt until rewritten;
      its temp files stay in ``.ganfolk-tmp/`` and may be deleted at any time.)
    * URIs are ``file:///abs/root/a/b.png``.  :meth:`presigned_url` returns that same
      ``file://`` URI: a file needs no signature, and only processes on this machine
      can use it.
    * Unlike S3, ``a`` and ``a/b`` cannot both exist (a file is not a directory);
      that ``put`` raises :class:`StorageError`.
    * Empty directories left by ``delete`` are not pruned (harmless: only files are
      objects).
    * Durability across a power loss (a killed process loses nothing either way: the
      renames are atomic) is ``fsync=``, else ``GANFOLK_STORE_FSYNC``:

      - ``full``: data, sidecar and both directory entries are synced before ``put``
        returns, and the entries of the directories on the way once per process.
      - ``data`` (default): the data file is synced before its rename, so no crash
        exposes a partly written object under its key; the rename that creates a new
        key is synced, as is a new directory's entry. The sidecar
        is not synced: after a power loss it may be missing or empty, and the object
        then reads as one without stored metadata (callers pass the sha256 from the
        message, so reads stay verified); an overwrite may come back as the old
        version. Two syncs per new key instead of four.
      - ``off``: nothing is synced (tests, scratch stores).

      Directory syncs of concurrent puts into one directory are shared (group commit).
    """

    META_DIR = ".ganfolk-meta"
    TMP_DIR = ".ganfolk-tmp"
    LOCK_DIR = ".ganfolk-locks"
    LOCK_STRIPES = 64

    # Directories whose entries this process has made durable (bounded; forgetting one
    # costs one more sync).
    KNOWN_DIRS = 4096

    def __init__(self, root: StrPath, *, fsync: bool | str | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.durability: Durability = fsync_level(fsync)
        self.fsync = self.durability != "off"
        self._meta_root = self.root / self.META_DIR
        self._tmp_root = self.root / self.TMP_DIR
        self._lock_root = self.root / self.LOCK_DIR
        for d in (self.root, self._meta_root, self._tmp_root, self._lock_root):
            d.mkdir(parents=True, exist_ok=True)
        self._known_guard = threading.Lock()
        self._known: OrderedDict[Path, None] = OrderedDict({self.root: None})

    @contextlib.contextmanager
    def _locked(self, key: str, *, exclusive: bool) -> Iterator[None]:
        stripe = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big")
        path = self._lock_root / f"{stripe % self.LOCK_STRIPES:02d}.lock"
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)  # flock needs no write access
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # -- directories ----------------------------------------------------------

    def _is_known(self, d: Path) -> bool:
        with self._known_guard:
            if d in self._known:
                self._known.move_to_end(d)
                return True
            return False

    def _mark_known(self, d: Path) -> None:
        with self._known_guard:
            self._known[d] = None
            while len(self._known) > self.KNOWN_DIRS:
                self._known.popitem(last=False)

    def _make_dir(self, d: Path, durable: bool) -> None:
        """``mkdir -p d`` under the root; with ``durable``, ``d``'s entry is synced.

        Synced when this call created ``d``, or the first time this process puts into it
        (another thread or process may have created it and not synced it yet); after that
        the directory is known and costs nothing. Parents this call created are synced by
        the recursion; "full" also syncs, once, parents someone else created.
        """
        created = True
        try:
            os.mkdir(d)
        except FileExistsError:
            created = False
        except FileNotFoundError:
            if d == self.root or d.parent == d:
                raise
            self._make_dir(d.parent, durable)
            try:
                os.mkdir(d)
            except FileExistsError:
                created = False
        if not durable or (not created and self._is_known(d)):
            return
        if self.durability != "full":
            _DIR_SYNCER.sync(d.parent)
            self._mark_known(d)  # only once synced: a thread that finds it unknown syncs too
            return
        p = d
        while p != self.root and (p is d or not self._is_known(p)):
            _DIR_SYNCER.sync(p.parent)
            self._mark_known(p)
            p = p.parent

    # -- paths ----------------------------------------------------------------

    def _data_path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _meta_path(self, key: str) -> Path:
        parts = key.split("/")
        return self._meta_root.joinpath(*parts[:-1], parts[-1] + ".json")

    def uri(self, key: str) -> str:
        return self._data_path(key).as_uri()

    def key_from_uri(self, uri: str) -> str:
        scheme, _, abs_key = parse_uri(uri)
        if scheme != "file":
            raise ValueError(f"not a file URI, so not in {self!r}: {uri!r}")
        path = Path("/" + abs_key)
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            raise ValueError(f"URI is outside the store root {str(self.root)!r}: {uri!r}") from None
        return validate_key(rel.as_posix())

    # -- sidecar --------------------------------------------------------------

    def _read_meta(self, key: str) -> dict[str, Any] | None:
        try:
            raw = self._meta_path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not raw:
            # Never written so (sidecars are renamed in whole): an unsynced sidecar after a
            # power loss, see the class notes. The object reads as one without metadata.
            return None
        try:
            meta = json.loads(raw)
            if not isinstance(meta, dict):
                raise ValueError("not an object")
            return meta
        except ValueError as exc:
            raise StorageError(f"corrupt metadata sidecar for {key!r}: {exc}") from exc

    def _info(self, key: str, size: int, meta: dict[str, Any] | None) -> ObjectInfo:
        meta = meta or {}
        sha = meta.get("sha256")
        return ObjectInfo(
            key=key,
            uri=self.uri(key),
            size=size,
            sha256=sha if isinstance(sha, str) else None,
            content_type=str(meta.get("content_type") or DEFAULT_CONTENT_TYPE),
            metadata={str(k): str(v) for k, v in dict(meta.get("metadata") or {}).items()},
        )

    # -- operations -----------------------------------------------------------

    def put(
        self,
        key: str,
        data: BytesLike,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        dest = self._data_path(key)
        content_type = validate_content_type(content_type)
        meta = validate_metadata(metadata)
        # No hash given: the one computed while writing goes into the sidecar.
        return self._commit(key, dest, None, content_type, meta, [bytes(data)])

    def put_file(
        self,
        key: str,
        path: StrPath,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        dest = self._data_path(key)
        content_type = validate_content_type(content_type)
        meta = validate_metadata(metadata)
        src = Path(path)
        # Hashed before and again while copying: a source changed in between is refused.
        _size, digests = hash_file(src)
        digest = digests["sha256"]

        def chunks() -> Iterator[bytes]:
            with open(src, "rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    yield chunk

        return self._commit(key, dest, digest, content_type, meta, chunks())

    def _commit(
        self,
        key: str,
        dest: Path,
        digest: str | None,
        content_type: str,
        metadata: dict[str, str],
        chunks: Iterable[bytes],
    ) -> ObjectInfo:
        meta_path = self._meta_path(key)
        full = self.durability == "full"
        try:
            self._make_dir(dest.parent, durable=self.fsync)
            self._make_dir(meta_path.parent, durable=full)
            if dest.is_dir():
                raise IsADirectoryError(f"{dest} is a directory")
            data_tmp, written, written_sha = write_temp(
                self._tmp_root, chunks, fsync=self.fsync, verify=(key, digest) if digest else None
            )
            try:
                sidecar = {
                    "sha256": written_sha,
                    "size": written,
                    "content_type": content_type,
                    "metadata": metadata,
                }
                meta_tmp, _, _ = write_temp(
                    self._tmp_root, [json.dumps(sidecar, sort_keys=True).encode()], fsync=full
                )
                try:
                    # Sidecar first: a crash in between leaves a sidecar without data
                    # (invisible: existence is decided by the data file) or, on
                    # overwrite, new hash + old data (detected on read), never
                    # unverifiable data.
                    with self._locked(key, exclusive=True):
                        new_key = not os.path.lexists(dest)
                        os.replace(meta_tmp, meta_path)
                        os.replace(data_tmp, dest)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        meta_tmp.unlink()
            finally:
                with contextlib.suppress(FileNotFoundError):
                    data_tmp.unlink()
            if full:
                _DIR_SYNCER.sync(meta_path.parent)
            if full or (self.fsync and new_key):
                # "data" leaves an overwrite's rename unsynced: the old version is whole too.
                _DIR_SYNCER.sync(dest.parent)
        except IntegrityError as exc:  # the source file changed while being copied
            raise StorageError(f"source of {key!r} changed while it was stored") from exc
        except (NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
            raise StorageError(
                f"cannot store {key!r}: a prefix of it is an object, or it is a prefix of other keys "
                f"(a file cannot also be a directory in LocalStore): {exc}"
            ) from exc
        except OSError as exc:
            raise StorageError(f"cannot store {key!r}: {exc}") from exc
        return ObjectInfo(key, self.uri(key), written, written_sha, content_type, metadata)

    def _open_data(self, key: str) -> tuple[BinaryIO, dict[str, Any] | None]:
        """Open the data file and read its sidecar as one consistent pair."""
        path = self._data_path(key)
        with self._locked(key, exclusive=False):
            try:
                f = open(path, "rb")
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise ObjectNotFound(key) from None
            try:
                if not _stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise ObjectNotFound(key)
                meta = self._read_meta(key)
            except BaseException:
                f.close()
                raise
        return f, meta

    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        validate_key(key)
        expected = check_sha256(expected_sha256) if expected_sha256 is not None else None
        f, meta = self._open_data(key)
        with f:
            data = f.read()  # the open file stays the version paired with ``meta``
        want = expected if expected is not None else self._info(key, len(data), meta).sha256
        actual = sha256_hex(data)
        if want is not None and actual != want:
            raise IntegrityError(key, want, actual)
        return data

    def get_file(self, key: str, path: StrPath, expected_sha256: str | None = None) -> ObjectInfo:
        validate_key(key)
        expected = check_sha256(expected_sha256) if expected_sha256 is not None else None
        f, meta = self._open_data(key)
        with f:
            info = self._info(key, 0, meta)
            want = expected if expected is not None else info.sha256

            def chunks() -> Iterator[bytes]:
                while chunk := f.read(CHUNK_BYTES):
                    yield chunk

            size, digest = atomic_write_chunks(Path(path), chunks(), fsync=False, verify=(key, want))
        return ObjectInfo(key, info.uri, size, digest, info.content_type, info.metadata)

    def stat(self, key: str) -> ObjectInfo:
        f, meta = self._open_data(key)
        with f:
            size = os.fstat(f.fileno()).st_size
        return self._info(key, size, meta)

    def exists(self, key: str) -> bool:
        return self._data_path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        dir_part = prefix.rpartition("/")[0]
        start = self.root.joinpath(*dir_part.split("/")) if dir_part else self.root
        keys: list[str] = []

        def walk(d: Path, rel: str) -> None:
            try:
                entries = list(os.scandir(d))
            except (FileNotFoundError, NotADirectoryError):
                return
            for e in entries:
                k = f"{rel}/{e.name}" if rel else e.name
                if not rel and e.name.startswith(RESERVED_PREFIX):
                    continue
                if e.is_dir(follow_symlinks=False):
                    if k.startswith(prefix) or prefix.startswith(k + "/"):
                        walk(Path(e.path), k)
                elif e.is_file() and k.startswith(prefix):
                    keys.append(k)

        walk(start, dir_part)
        keys.sort(key=lambda k: k.encode("utf-8"))
        return self._iter_infos(keys)

    def _iter_infos(self, keys: Sequence[str]) -> Iterator[ObjectInfo]:
        for k in keys:
            try:
                validate_key(k)
                yield self.stat(k)
            except (ObjectNotFound, ValueError):
                continue  # deleted meanwhile, or a foreign file whose name is not a valid key

    def delete(self, key: str) -> None:
        path = self._data_path(key)
        if path.is_dir():
            return
        with self._locked(key, exclusive=True):
            # Data first: once it is gone the object is gone, whatever happens next.
            for p in (path, self._meta_path(key)):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    p.unlink()

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """The object's ``file://`` URI (no signing for local files; ``expires`` is ignored)."""
        self.stat(key)
        return self.uri(key)
