"""The one object-store client every GANfolk service uses.

Images (and optionally weights) never travel inside NATS messages: they are
objects in an S3-API store (MinIO in compose/k8s) or, for the embedded local
mode, in a directory tree.  Messages carry ``(uri, sha256)`` pairs; a reader
fetches the bytes with :meth:`ObjectStore.get` and the hash is checked on read.

Interface
---------
:class:`ObjectStore` is the interface, with two implementations:

* :class:`S3Store` -- any S3 API through the ``minio`` SDK.  URIs are
  ``s3://bucket/key``; the sha256 is kept in user metadata (``x-amz-meta-sha256``).
* :class:`LocalStore` -- a directory (the embedded default).  URIs are
  ``file:///abs/path``; sha256, content type and user metadata live in a JSON
  sidecar under ``<root>/.ganfolk-meta/``; writes are atomic (temp file +
  ``os.replace``).

:func:`open_store` builds either from a URL (``file:///srv/objects``,
``s3://bucket?endpoint=minio:9000&secure=false``, ``http://minio:9000/bucket``).

Integrity
---------
``put`` computes the sha256 of the bytes and stores it with the object.
``get(key, expected_sha256)`` verifies the bytes it returns: against
``expected_sha256`` when given (the hash that travelled in the message -- the
check that matters), otherwise against the hash stored at put time.  A mismatch
raises :class:`IntegrityError`.  Objects written by other tools carry no stored
hash; reading them without ``expected_sha256`` returns the bytes unverified and
their :attr:`ObjectInfo.sha256` is ``None``.

Concurrency
-----------
All methods are synchronous and blocking (the ``minio`` SDK is synchronous).
Both stores are safe to share between threads, so asyncio code calls them as
``await asyncio.to_thread(store.get, key, sha)``.

Keys
----
Keys are ``/``-separated, non-empty, at most 1024 UTF-8 bytes, with no leading
or trailing ``/``, no empty, ``.`` or ``..`` segments, no backslash or control
characters, and no first segment starting with ``.ganfolk-`` (reserved for the
local store's bookkeeping).  The same rules apply to both stores so that a key
that works locally works on S3 and vice versa.  Anything else is a ``ValueError``.

User metadata keys must match ``[a-z0-9][a-z0-9-]*`` (S3 lower-cases and
HTTP-transports them), values must be printable ASCII without leading/trailing
blanks, and ``sha256`` is reserved.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import stat as _stat
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "IntegrityError",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "S3Store",
    "StorageError",
    "open_store",
    "parse_uri",
    "sha256_hex",
    "validate_key",
]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
SHA256_META_KEY = "sha256"
RESERVED_PREFIX = ".ganfolk-"
MAX_KEY_BYTES = 1024
MAX_METADATA_BYTES = 2048
_CHUNK = 1 << 20

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_META_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PRINTABLE_ASCII_RE = re.compile(r"^[\x20-\x7e]*$")

BytesLike = bytes | bytearray | memoryview
StrPath = str | os.PathLike[str]


# --------------------------------------------------------------------------- errors


class StorageError(Exception):
    """Base class of every error raised by this module (besides ValueError/TypeError)."""


class ObjectNotFound(KeyError, StorageError):
    """The object does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"object not found: {self.key!r}"


class IntegrityError(StorageError):
    """The bytes read do not hash to the expected sha256."""

    def __init__(self, key: str, expected: str, actual: str) -> None:
        super().__init__(f"sha256 mismatch for object {key!r}: expected {expected}, got {actual}")
        self.key = key
        self.expected = expected
        self.actual = actual


# --------------------------------------------------------------------------- helpers


def sha256_hex(data: BytesLike) -> str:
    """Lower-case hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _check_sha256(value: str, what: str = "expected_sha256") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    norm = value.strip().lower()
    if not _SHA256_RE.match(norm):
        raise ValueError(f"{what} is not a hex sha256: {value!r}")
    return norm


def _bad_chars(s: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in s)


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid object key, else raise ``ValueError``."""
    if not isinstance(key, str):
        raise TypeError(f"object key must be a str, not {type(key).__name__}")
    if not key:
        raise ValueError("object key must not be empty")
    try:
        nbytes = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"object key is not valid UTF-8: {key!r}") from exc
    if nbytes > MAX_KEY_BYTES:
        raise ValueError(f"object key longer than {MAX_KEY_BYTES} bytes: {key[:64]!r}...")
    if key.startswith("/"):
        raise ValueError(f"object key must not start with '/': {key!r}")
    if key.endswith("/"):
        raise ValueError(f"object key must not end with '/': {key!r}")
    if _bad_chars(key):
        raise ValueError(f"object key contains a backslash or control character: {key!r}")
    segments = key.split("/")
    for seg in segments:
        if seg in ("", ".", ".."):
            raise ValueError(f"object key has an empty, '.' or '..' segment: {key!r}")
    if segments[0].startswith(RESERVED_PREFIX):
        raise ValueError(f"object keys starting with {RESERVED_PREFIX!r} are reserved: {key!r}")
    return key


def _validate_prefix(prefix: str) -> str:
    """A listing prefix is a raw string prefix; only its complete segments must be sane."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    if not prefix:
        return prefix
    if prefix.startswith("/"):
        raise ValueError(f"prefix must not start with '/': {prefix!r}")
    if _bad_chars(prefix):
        raise ValueError(f"prefix contains a backslash or control character: {prefix!r}")
    for seg in prefix.split("/")[:-1]:
        if seg in ("", ".", ".."):
            raise ValueError(f"prefix has an empty, '.' or '..' segment: {prefix!r}")
    return prefix


def _validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    out: dict[str, str] = {}
    total = 0
    for k, v in metadata.items():
        if not isinstance(k, str) or not _META_KEY_RE.match(k):
            raise ValueError(f"metadata key must match [a-z0-9][a-z0-9-]*: {k!r}")
        if k == SHA256_META_KEY:
            raise ValueError("metadata key 'sha256' is reserved (the store sets it)")
        if not isinstance(v, str) or not _PRINTABLE_ASCII_RE.match(v) or v != v.strip():
            raise ValueError(
                f"metadata value for {k!r} must be printable ASCII without leading/trailing blanks: {v!r}"
            )
        total += len(k) + len(v)
        out[k] = v
    if total > MAX_METADATA_BYTES:
        raise ValueError(f"user metadata larger than {MAX_METADATA_BYTES} bytes")
    return out


def _validate_content_type(content_type: str) -> str:
    if not isinstance(content_type, str) or not content_type or not _PRINTABLE_ASCII_RE.match(content_type):
        raise ValueError(f"content_type must be non-empty printable ASCII: {content_type!r}")
    return content_type


def parse_uri(uri: str) -> tuple[str, str, str]:
    """Split an object URI into ``(scheme, bucket_or_root, key)``.

    * ``s3://bucket/some/key`` -> ``("s3", "bucket", "some/key")``
    * ``file:///abs/path/x.png`` -> ``("file", "/", "abs/path/x.png")`` -- a file URI
      does not say where a store's root is, so the root is ``/`` and the key is the
      absolute path without its leading slash; :meth:`LocalStore.key_from_uri`
      makes it relative to the store's root.

    The key is validated; anything else raises ``ValueError``.
    """
    if not isinstance(uri, str):
        raise TypeError(f"uri must be a str, not {type(uri).__name__}")
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"not an object URI (no scheme): {uri!r}")
    if scheme == "s3":
        # Parsed by hand: keys are raw (aws-cli convention) and may contain '?' or '#'.
        bucket, slash, key = rest.partition("/")
        if not bucket or not slash:
            raise ValueError(f"s3 URI needs a bucket and a key: {uri!r}")
        return "s3", bucket, validate_key(key)
    if scheme == "file":
        parts = urllib.parse.urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URI names a remote host: {uri!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"file URI must not have a query or fragment: {uri!r}")
        path = urllib.parse.unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"file URI path must be absolute: {uri!r}")
        return "file", "/", validate_key(path[1:])
    raise ValueError(f"unsupported URI scheme {scheme!r}: {uri!r}")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_temp(
    tmp_dir: Path,
    chunks: Iterable[bytes],
    *,
    fsync: bool = True,
    verify: tuple[str, str | None] | None = None,
) -> tuple[Path, int, str]:
    """Write ``chunks`` to a new temp file in ``tmp_dir``; return ``(path, size, sha256)``.

    With ``verify=(key, expected)`` a hash mismatch raises :class:`IntegrityError`
    (and the temp file is removed).
    """
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=".ganfolk-tmp-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                h.update(chunk)
                size += len(chunk)
                f.write(chunk)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        digest = h.hexdigest()
        if verify is not None:
            key, expected = verify
            if expected is not None and digest != expected:
                raise IntegrityError(key, expected, digest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp, size, digest


def _atomic_write_chunks(
    dest: Path,
    chunks: Iterable[bytes],
    *,
    fsync: bool = True,
    verify: tuple[str, str | None] | None = None,
) -> tuple[int, str]:
    """Write ``chunks`` to ``dest`` atomically (temp file beside it + ``os.replace``).

    Returns ``(size, sha256)``.  With ``verify=(key, expected)`` the hash is checked
    before the rename and ``dest`` is left untouched on mismatch.
    """
    tmp, size, digest = _write_temp(dest.parent, chunks, fsync=fsync, verify=verify)
    try:
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        _fsync_dir(dest.parent)
    return size, digest


def _hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


# --------------------------------------------------------------------------- interface


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object.

    ``sha256`` is ``None`` only for objects written by something other than this
    module (no stored hash).  ``metadata`` is the user metadata (without ``sha256``),
    read-only.
    """

    key: str
    uri: str
    size: int
    sha256: str | None
    content_type: str = DEFAULT_CONTENT_TYPE
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))


class ObjectStore(abc.ABC):
    """Interface of an object store.  All methods block; see the module docstring."""

    # -- abstract -------------------------------------------------------------

    @abc.abstractmethod
    def put(
        self,
        key: str,
        data: BytesLike,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` (overwriting), recording its sha256."""

    @abc.abstractmethod
    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        """Return the object's bytes, verified against ``expected_sha256`` or the stored hash.

        Raises :class:`ObjectNotFound` or :class:`IntegrityError`.
        """

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Describe the object without reading it; :class:`ObjectNotFound` if absent."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (a raw string prefix, recursive),
        in UTF-8 byte order of their keys."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object.  Deleting an absent object is not an error (S3 semantics)."""

    @abc.abstractmethod
    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A URL from which the object can be fetched without credentials."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """The URI naming ``key`` in this store (what goes into messages)."""

    @abc.abstractmethod
    def key_from_uri(self, uri: str) -> str:
        """The key of ``uri`` if it belongs to this store, else ``ValueError``."""

    # -- concrete -------------------------------------------------------------

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def put_file(
        self,
        key: str,
        path: StrPath,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store the contents of the file at ``path``."""
        return self.put(key, Path(path).read_bytes(), content_type, metadata)

    def get_file(self, key: str, path: StrPath, expected_sha256: str | None = None) -> ObjectInfo:
        """Write the object to ``path`` atomically, verified as in :meth:`get`.

        On :class:`IntegrityError` the destination is left untouched.
        """
        data = self.get(key, expected_sha256)
        info = self.stat(key)
        dest = Path(path)
        _atomic_write_chunks(dest, [data])
        return ObjectInfo(info.key, info.uri, len(data), sha256_hex(data), info.content_type, info.metadata)

    def get_uri(self, uri: str, expected_sha256: str | None = None) -> bytes:
        """``get(key_from_uri(uri), expected_sha256)``."""
        return self.get(self.key_from_uri(uri), expected_sha256)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connection pools).  Safe to call twice."""

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- local filesystem


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
    """

    META_DIR = ".ganfolk-meta"
    TMP_DIR = ".ganfolk-tmp"
    LOCK_DIR = ".ganfolk-locks"
    LOCK_STRIPES = 64

    def __init__(self, root: StrPath, *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.fsync = fsync
        self._meta_root = self.root / self.META_DIR
        self._tmp_root = self.root / self.TMP_DIR
        self._lock_root = self.root / self.LOCK_DIR
        for d in (self.root, self._meta_root, self._tmp_root, self._lock_root):
            d.mkdir(parents=True, exist_ok=True)

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
        content_type = _validate_content_type(content_type)
        meta = _validate_metadata(metadata)
        payload = bytes(data)
        return self._commit(key, dest, sha256_hex(payload), len(payload), content_type, meta, [payload])

    def put_file(
        self,
        key: str,
        path: StrPath,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        dest = self._data_path(key)
        content_type = _validate_content_type(content_type)
        meta = _validate_metadata(metadata)
        src = Path(path)
        size, digest = _hash_file(src)

        def chunks() -> Iterator[bytes]:
            with open(src, "rb") as f:
                while chunk := f.read(_CHUNK):
                    yield chunk

        return self._commit(key, dest, digest, size, content_type, meta, chunks())

    def _commit(
        self,
        key: str,
        dest: Path,
        digest: str,
        size: int,
        content_type: str,
        metadata: dict[str, str],
        chunks: Iterable[bytes],
    ) -> ObjectInfo:
        sidecar = {"sha256": digest, "size": size, "content_type": content_type, "metadata": metadata}
        meta_path = self._meta_path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir():
                raise IsADirectoryError(f"{dest} is a directory")
            data_tmp, written, written_sha = _write_temp(
                self._tmp_root, chunks, fsync=self.fsync, verify=(key, digest)
            )
            try:
                meta_tmp, _, _ = _write_temp(
                    self._tmp_root, [json.dumps(sidecar, sort_keys=True).encode()], fsync=self.fsync
                )
                try:
                    # Sidecar first: a crash in between leaves a sidecar without data
                    # (invisible: existence is decided by the data file) or, on
                    # overwrite, new hash + old data (detected on read), never
                    # unverifiable data.
                    with self._locked(key, exclusive=True):
                        os.replace(meta_tmp, meta_path)
                        os.replace(data_tmp, dest)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        meta_tmp.unlink()
            finally:
                with contextlib.suppress(FileNotFoundError):
                    data_tmp.unlink()
            if self.fsync:
                _fsync_dir(meta_path.parent)
                _fsync_dir(dest.parent)
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
        expected = _check_sha256(expected_sha256) if expected_sha256 is not None else None
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
        expected = _check_sha256(expected_sha256) if expected_sha256 is not None else None
        f, meta = self._open_data(key)
        with f:
            info = self._info(key, 0, meta)
            want = expected if expected is not None else info.sha256

            def chunks() -> Iterator[bytes]:
                while chunk := f.read(_CHUNK):
                    yield chunk

            size, digest = _atomic_write_chunks(Path(path), chunks(), fsync=False, verify=(key, want))
        return ObjectInfo(key, info.uri, size, digest, info.content_type, info.metadata)

    def stat(self, key: str) -> ObjectInfo:
        f, meta = self._open_data(key)
        with f:
            size = os.fstat(f.fileno()).st_size
        return self._info(key, size, meta)

    def exists(self, key: str) -> bool:
        return self._data_path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        _validate_prefix(prefix)
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


# --------------------------------------------------------------------------- S3 / MinIO

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NotFound"})


class S3Store(ObjectStore):
    """Objects in one bucket of an S3-API server (MinIO) through the ``minio`` SDK.

    ``endpoint`` is ``host:port`` (no scheme).  The bucket is created if missing
    (:meth:`ensure_bucket`, idempotent and safe against concurrent creators) unless
    ``create_bucket=False``.  The sha256 is stored as user metadata
    ``x-amz-meta-sha256``; URIs are ``s3://bucket/key`` (they do not name the
    endpoint).  :meth:`list` issues one ``HEAD`` per object to report hashes.
    Requests time out after ``connect_timeout``/``read_timeout`` seconds and are
    retried (5 times, with back-off) on 5xx answers; pass ``http_client`` (a
    ``urllib3.PoolManager``) to change that.

    Presigned URLs are signed for ``endpoint`` as this client sees it: a URL
    minted against an in-cluster host name only works where that name resolves.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
        *,
        create_bucket: bool = True,
        http_client: Any = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
    ) -> None:
        from minio import Minio  # local import: LocalStore users need not have minio

        if "://" in endpoint or "/" in endpoint:
            raise ValueError(f"endpoint must be host:port without scheme or path: {endpoint!r}")
        self.endpoint = endpoint
        self.bucket = bucket
        self.secure = secure
        self.region = region
        self._owns_http = http_client is None
        if http_client is None:
            # The SDK's default waits 5 minutes to connect; a service should fail faster.
            import certifi
            import urllib3

            http_client = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                maxsize=16,
                cert_reqs="CERT_REQUIRED",
                ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
                retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http_client,
        )
        from minio.helpers import check_bucket_name

        check_bucket_name(bucket, strict=True)
        if create_bucket:
            self.ensure_bucket()

    def __repr__(self) -> str:  # never show credentials
        scheme = "https" if self.secure else "http"
        return f"S3Store({scheme}://{self.endpoint}/{self.bucket})"

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        from minio.error import MinioException, S3Error
        from urllib3.exceptions import HTTPError

        try:
            yield
        except S3Error as exc:
            if key is not None and exc.code in _NOT_FOUND_CODES:
                raise ObjectNotFound(key) from None
            if exc.code == "NoSuchBucket":
                raise StorageError(f"bucket {self.bucket!r} does not exist on {self.endpoint}") from exc
            raise StorageError(f"S3 error on {self!r} key={key!r}: {exc.code}: {exc.message}") from exc
        except (MinioException, HTTPError) as exc:
            raise StorageError(f"S3 request to {self!r} failed (key={key!r}): {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent)."""
        from minio.error import S3Error

        with self._errors():
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket, location=self.region)
            except S3Error as exc:
                if exc.code == "BucketAlreadyOwnedByYou":
                    return
                if exc.code == "BucketAlreadyExists" and self.client.bucket_exists(self.bucket):
                    return
                raise

    def close(self) -> None:
        if self._owns_http:
            http = getattr(self.client, "_http", None)
            if http is not None:
                http.clear()

    # -- naming ---------------------------------------------------------------

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{validate_key(key)}"

    def key_from_uri(self, uri: str) -> str:
        scheme, bucket, key = parse_uri(uri)
        if scheme != "s3" or bucket != self.bucket:
            raise ValueError(f"URI does not belong to bucket {self.bucket!r}: {uri!r}")
        return key

    # -- helpers --------------------------------------------------------------

    def _info_from_headers(self, key: str, headers: Any, size: int | None = None) -> ObjectInfo:
        user: dict[str, str] = {}
        sha: str | None = None
        content_type = DEFAULT_CONTENT_TYPE
        length = size
        for name, value in headers.items():
            lname = name.lower()
            if lname.startswith("x-amz-meta-"):
                mkey = lname[len("x-amz-meta-") :]
                if mkey == SHA256_META_KEY:
                    sha = value.strip().lower()
                else:
                    user[mkey] = value
            elif lname == "content-type":
                content_type = value
            elif lname == "content-length" and length is None:
                length = int(value)
        return ObjectInfo(key, self.uri(key), length or 0, sha, content_type, user)

    def _put_stream(
        self,
        key: str,
        stream: BinaryIO,
        size: int,
        digest: str,
        content_type: str,
        metadata: dict[str, str],
    ) -> ObjectInfo:
        with self._errors(key):
            self.client.put_object(
                self.bucket,
                key,
                stream,
                size,
                content_type=content_type,
                metadata={**metadata, SHA256_META_KEY: digest},
            )
        return ObjectInfo(key, self.uri(key), size, digest, content_type, metadata)

    # -- operations -----------------------------------------------------------

    def put(
        self,
        key: str,
        data: BytesLike,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        validate_key(key)
        content_type = _validate_content_type(content_type)
        meta = _validate_metadata(metadata)
        payload = bytes(data)
        digest = sha256_hex(payload)
        return self._put_stream(key, io.BytesIO(payload), len(payload), digest, content_type, meta)

    def put_file(
        self,
        key: str,
        path: StrPath,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Stream a file up (two passes: hash, then upload; memory stays bounded)."""
        validate_key(key)
        content_type = _validate_content_type(content_type)
        meta = _validate_metadata(metadata)
        size, digest = _hash_file(Path(path))
        with open(path, "rb") as f:
            return self._put_stream(key, f, size, digest, content_type, meta)

    def _open(self, key: str) -> Any:
        with self._errors(key):
            return self.client.get_object(self.bucket, key)

    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        validate_key(key)
        expected = _check_sha256(expected_sha256) if expected_sha256 is not None else None
        resp = self._open(key)
        try:
            with self._errors(key):
                data: bytes = resp.read()
            info = self._info_from_headers(key, resp.headers, len(data))
        finally:
            resp.close()
            resp.release_conn()
        want = expected if expected is not None else info.sha256
        actual = sha256_hex(data)
        if want is not None and actual != want:
            raise IntegrityError(key, want, actual)
        return data

    def get_file(self, key: str, path: StrPath, expected_sha256: str | None = None) -> ObjectInfo:
        """Stream the object into ``path`` (atomic, verified before the rename)."""
        validate_key(key)
        expected = _check_sha256(expected_sha256) if expected_sha256 is not None else None
        resp = self._open(key)
        try:
            info = self._info_from_headers(key, resp.headers)
            want = expected if expected is not None else info.sha256
            with self._errors(key):
                size, digest = _atomic_write_chunks(
                    Path(path), resp.stream(_CHUNK), fsync=False, verify=(key, want)
                )
        finally:
            resp.close()
            resp.release_conn()
        return ObjectInfo(key, info.uri, size, digest, info.content_type, info.metadata)

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        with self._errors(key):
            obj = self.client.stat_object(self.bucket, key)
        return self._info_from_headers(key, obj.metadata or {}, obj.size)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        _validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._errors():
            names = [
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
                if o.object_name is not None and not o.is_dir
            ]
        names.sort(key=lambda k: k.encode("utf-8"))
        for name in names:
            try:
                validate_key(name)
                yield self.stat(name)
            except (ObjectNotFound, ValueError):
                continue  # deleted meanwhile, or a foreign key this module cannot address

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._errors(key):
            self.client.remove_object(self.bucket, key)

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A presigned ``GET`` URL (1 second to 7 days); does not check that the object exists."""
        validate_key(key)
        with self._errors(key):
            return self.client.presigned_get_object(self.bucket, key, expires=expires)


# --------------------------------------------------------------------------- factory

_S3_KWARGS = ("access_key", "secret_key", "region", "secure", "create_bucket", "http_client")


def _parse_bool(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")


def open_store(url: str | os.PathLike[str], **creds: Any) -> ObjectStore:
    """Open the store named by ``url``.

    * ``file:///abs/dir``, ``file://localhost/abs/dir`` or a plain path -> :class:`LocalStore`
      (S3-only keyword arguments such as credentials are ignored, so one configuration
      can switch between stores; ``fsync=`` is passed through).
    * ``s3://[ACCESS:SECRET@]bucket[?endpoint=host:port&secure=false&region=r]`` ->
      :class:`S3Store`; ``endpoint`` defaults to ``s3.amazonaws.com`` and ``secure``
      to true.
    * ``http://[ACCESS:SECRET@]host:port/bucket`` (``https`` for TLS) -> :class:`S3Store`.

    Keyword arguments ``access_key``, ``secret_key``, ``region``, ``secure``,
    ``create_bucket`` and ``http_client`` override what the URL says.  Credentials in
    the URL are percent-decoded.  Unknown keyword arguments raise ``TypeError``;
    unknown query parameters or malformed URLs raise ``ValueError``.
    """
    url = os.fspath(url)
    if not isinstance(url, str) or not url:
        raise ValueError("store URL must be a non-empty string")
    unknown = set(creds) - set(_S3_KWARGS) - {"fsync"}
    if unknown:
        raise TypeError(f"open_store() got unexpected keyword arguments: {sorted(unknown)}")

    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower() if sep else ""
    if not sep:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", url):
            raise ValueError(f"store URL looks like a URL but is not scheme://...: {url!r}")
        return LocalStore(Path(url), **{k: v for k, v in creds.items() if k == "fsync"})
    if scheme == "file":
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise ValueError(f"file store URL must be file:///absolute/path: {url!r}")
        path = urllib.parse.unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"file store URL must be file:///absolute/path: {url!r}")
        return LocalStore(Path(path), **{k: v for k, v in creds.items() if k == "fsync"})
    if "fsync" in creds:
        raise TypeError("fsync= only applies to file stores")

    parts = urllib.parse.urlsplit(url)
    if parts.fragment:
        raise ValueError(f"store URL must not have a fragment: {url!r}")
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    opts: dict[str, Any] = {}
    if scheme == "s3":
        bucket = parts.netloc.rpartition("@")[2]  # not .hostname: that lower-cases
        if parts.port is not None or parts.path not in ("", "/"):
            raise ValueError(f"s3 store URL is s3://bucket?endpoint=host:port: {url!r}")
        endpoint = query.pop("endpoint", "s3.amazonaws.com")
        opts["secure"] = _parse_bool(query.pop("secure"), "secure") if "secure" in query else True
    elif scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"store URL needs a host: {url!r}")
        host = parts.hostname
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        endpoint = f"{host}:{parts.port}" if parts.port else host
        bucket = parts.path.strip("/")
        if not bucket or "/" in bucket:
            raise ValueError(f"store URL must be {scheme}://host:port/bucket: {url!r}")
        opts["secure"] = scheme == "https"
        if "secure" in query:
            raise ValueError("secure= is implied by http/https; do not pass it in the query")
    else:
        raise ValueError(f"unsupported store URL scheme {scheme!r}")
    if "region" in query:
        opts["region"] = query.pop("region") or None
    if query:
        raise ValueError(f"unknown store URL parameters: {sorted(query)}")
    if not endpoint:
        raise ValueError(f"empty endpoint in store URL: {url!r}")
    if parts.username is not None:
        opts["access_key"] = urllib.parse.unquote(parts.username)
    if parts.password is not None:
        opts["secret_key"] = urllib.parse.unquote(parts.password)
    opts.update(creds)
    access_key = opts.pop("access_key", None)
    secret_key = opts.pop("secret_key", None)
    if not access_key or not secret_key:
        raise ValueError("S3 store needs access_key and secret_key (in the URL or as keyword arguments)")
    return S3Store(endpoint, access_key, secret_key, bucket, **opts)
