"""The one object-store client every GANfolk service uses.

Images (and optionally weights) never travel inside NATS messages: they are
objects in an S3-API store (MinIO in compose/k8s) or, for the embedded local
mode, in a directory tree.  Messages carry ``(uri, sha256)`` pairs; a reader
fetches the bytes with :meth:`ObjectStore.get` and the hash is checked on read.

Modules
-------
* :mod:`.interface` -- :class:`ObjectStore` (the interface), :class:`ObjectInfo`,
  the errors, and the rules for keys, object URIs and user metadata.
* :mod:`.local` -- :class:`LocalStore`, a directory (the embedded default).  URIs are
  ``file:///abs/path``; sha256, content type and user metadata live in a JSON
  sidecar under ``<root>/.ganfolk-meta/``; writes are atomic (temp file + ``os.replace``,
  helpers in :mod:`.atomic`).
* :mod:`.s3` -- :class:`S3Store`, any S3 API through the ``minio`` SDK.  URIs are
  ``s3://bucket/key``; the sha256 is kept in user metadata (``x-amz-meta-sha256``).
* :mod:`.urls` -- :func:`open_store` builds either from a URL (``file:///srv/objects``,
  ``s3://bucket?endpoint=minio:9000&secure=false``, ``http://minio:9000/bucket``) and
  alone finds S3 credentials and region (keyword, URL, or ``GANFOLK_S3_*``).

Everything public is re-exported here: ``from ganfolk.runtime.storage import ...``.

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
"""

from __future__ import annotations

from ganfolk.runtime.hashing import sha256_hex
from ganfolk.runtime.storage.interface import (
    DEFAULT_CONTENT_TYPE,
    IntegrityError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    parse_uri,
    validate_key,
)
from ganfolk.runtime.storage.local import LocalStore
from ganfolk.runtime.storage.s3 import S3Store
from ganfolk.runtime.storage.urls import open_store, redact_url

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
    "redact_url",
    "sha256_hex",
    "validate_key",
]
