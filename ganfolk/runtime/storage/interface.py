"""The object-store interface, its errors, and the rules for keys, URIs and metadata.

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
import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "BytesLike",
    "IntegrityError",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
    "StrPath",
    "check_sha256",
    "parse_uri",
    "validate_content_type",
    "validate_key",
    "validate_metadata",
    "validate_prefix",
]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
SHA256_META_KEY = "sha256"
RESERVED_PREFIX = ".ganfolk-"
MAX_KEY_BYTES = 1024
MAX_METADATA_BYTES = 2048

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_META_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PRINTABLE_ASCII_RE = re.compile(r"^[\x20-\x7e]*$")

BytesLike = bytes | bytearray | memoryview
StrPath = str | os.PathLike[str]


# --------------------------------------------------------------------------- errors


class StorageError(Exception):
    """Base class of every error raised by the stores (besides ValueError/TypeError)."""


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


# --------------------------------------------------------------------------- validation


def check_sha256(value: str, what: str = "expected_sha256") -> str:
    """``value`` normalised to lower-case hex, or ``ValueError`` if it is not a sha256."""
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


def validate_prefix(prefix: str) -> str:
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


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of the user metadata, or ``ValueError`` naming the first bad entry."""
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


def validate_content_type(content_type: str) -> str:
    """``content_type`` unchanged if it is non-empty printable ASCII, else ``ValueError``."""
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


# --------------------------------------------------------------------------- interface


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object.

    ``sha256`` is ``None`` only for objects written by something other than these
    stores (no stored hash).  ``metadata`` is the user metadata (without ``sha256``),
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
    """Interface of an object store.  All methods block; see the package docstring."""

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
    def put_file(
        self,
        key: str,
        path: StrPath,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store the contents of the file at ``path``, streamed (memory stays bounded)."""

    @abc.abstractmethod
    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        """Return the object's bytes, verified against ``expected_sha256`` or the stored hash.

        Raises :class:`ObjectNotFound` or :class:`IntegrityError`.
        """

    @abc.abstractmethod
    def get_file(self, key: str, path: StrPath, expected_sha256: str | None = None) -> ObjectInfo:
        """Write the object to ``path`` atomically, verified as in :meth:`get`.

        On :class:`IntegrityError` the destination is left untouched.
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
        """Whether ``key`` names an object."""
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def get_uri(self, uri: str, expected_sha256: str | None = None) -> bytes:
        """``get(key_from_uri(uri), expected_sha256)``."""
        return self.get(self.key_from_uri(uri), expected_sha256)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connection pools).  Safe to call twice."""

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
