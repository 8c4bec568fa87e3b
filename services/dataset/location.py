"""Where a collection or a prepared set lives: a folder, or a prefix in an S3 bucket.

``/data/raw/photos`` and ``file:///data/raw/photos`` are local folders, each opened as its own
:class:`~ganfolk.runtime.storage.LocalStore` (a local store keeps its bookkeeping in its root, so
a parent folder is never opened as the store of its children). ``s3://bucket/raw/photos`` is a
prefix in a bucket; the endpoint comes from the URL's query (``?endpoint=host:port&secure=false``)
or, without one, from ``GANFOLK_STORE_URL`` when that names an S3 store, and the credentials
from ``GANFOLK_S3_*`` as everywhere else.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ganfolk.runtime.storage import ObjectInfo, ObjectStore, open_store, validate_key
from ganfolk.runtime.storage.local import LocalStore

__all__ = ["Location", "open_location"]


@dataclass
class Location:
    """A store and a key prefix inside it ("" for the store's root)."""

    store: ObjectStore
    prefix: str
    url: str  # as the user wrote it, without the query (for reports)
    query: str = ""  # an S3 location's query, carried to its children

    def key(self, rel: str) -> str:
        """The store key of ``rel`` (a relative key) under this location."""
        return validate_key(f"{self.prefix}/{rel}" if self.prefix else rel)

    def rel(self, key: str) -> str:
        """``key`` relative to this location."""
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def objects(self, sub: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``sub`` (a relative folder, "" for everything), keys left absolute."""
        start = self.key(sub) + "/" if sub else (self.prefix + "/" if self.prefix else "")
        return self.store.list(start)

    def get(self, rel: str, sha256: str | None = None) -> bytes:
        return self.store.get(self.key(rel), sha256)

    def put(self, rel: str, data: bytes, content_type: str = "application/octet-stream") -> ObjectInfo:
        return self.store.put(self.key(rel), data, content_type=content_type)

    def exists(self, rel: str) -> bool:
        return self.store.exists(self.key(rel))

    def delete(self, rel: str) -> None:
        self.store.delete(self.key(rel))

    @property
    def local_root(self) -> Path | None:
        """The folder of a local location (exports that need a real file system use it)."""
        if isinstance(self.store, LocalStore) and not self.prefix:
            return Path(self.store.root)
        return None

    def child(self, name: str) -> Location:
        """The location of a sub-folder ``name``."""
        validate_key(name)
        root = self.local_root
        if root is not None:
            return Location(LocalStore(root / name), "", f"{self.url.rstrip('/')}/{name}")
        return Location(self.store, self.key(name), f"{self.url.rstrip('/')}/{name}", self.query)

    def children_with(self, filename: str) -> list[str]:
        """Names of the direct sub-folders that hold ``filename`` (e.g. each collection's marker)."""
        root = self.local_root
        if root is not None:
            if not root.is_dir():
                return []
            return sorted(
                p.name
                for p in root.iterdir()
                if p.is_dir() and not p.name.startswith(".") and (p / filename).exists()
            )
        names = set()
        for info in self.objects():
            parts = self.rel(info.key).split("/")
            if len(parts) >= 2 and parts[1] == filename.split("/")[0]:
                names.add(parts[0])
        return sorted(names)

    def close(self) -> None:
        self.store.close()

    def __str__(self) -> str:
        return self.url


def _default_s3_query() -> str:
    configured = os.environ.get("GANFOLK_STORE_URL", "")
    if configured.startswith("s3://"):
        return urllib.parse.urlsplit(configured).query
    return ""


def open_location(url: str, *, create: bool = True) -> Location:
    """Open a folder path, ``file://`` folder or ``s3://bucket/prefix[?endpoint=...]``.

    ``create`` makes a missing local folder (outputs); inputs pass False and get a
    ``FileNotFoundError`` naming the folder.
    """
    if not url:
        raise ValueError("empty location: give a folder or s3://bucket/prefix")
    if url.startswith("s3://"):
        parts = urllib.parse.urlsplit(url)
        bucket = parts.netloc
        prefix = parts.path.strip("/")
        if not bucket:
            raise ValueError(f"{url}: an S3 location is s3://bucket/prefix")
        if prefix:
            validate_key(prefix)
        query = parts.query or _default_s3_query()
        store = open_store(f"s3://{bucket}" + (f"?{query}" if query else ""))
        return Location(store, prefix, f"s3://{bucket}/{prefix}".rstrip("/"), query)
    if url.startswith("file://"):
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    elif "://" in url:
        raise ValueError(f"{url}: a location is a folder, file:///folder or s3://bucket/prefix")
    else:
        path = Path(url)
    path = path.expanduser().resolve()
    if not create and not path.is_dir():
        raise FileNotFoundError(f"folder not found: {path}")
    return Location(LocalStore(path), "", str(path))
