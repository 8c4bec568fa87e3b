"""The one place GANfolk computes sha256 digests of bytes and of files.

Checkpoints, object-store payloads and provenance records all name content by its
lower-case hex sha256.  Every module hashes through these functions, so a file is
always read the same way (in 1 MiB chunks, never whole into memory) and a test can
check that no second copy of a file hasher creeps back in.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

__all__ = ["CHUNK_BYTES", "file_sha256", "hash_file", "sha256_hex"]

# Large enough to keep hashing CPU-bound, small enough that a multi-GB checkpoint
# never sits in memory.
CHUNK_BYTES = 1 << 20


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """Lower-case hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_file(
    path: str | os.PathLike[str], algorithms: Sequence[str] = ("sha256",)
) -> tuple[int, dict[str, str]]:
    """``(size, {algorithm: hex digest})`` of the file at ``path``, from one read of it.

    Size and digests come from the same bytes, so a caller that streams the file
    afterwards can tell whether it changed in between.  ``algorithms`` are
    :func:`hashlib.new` names; md5 is allowed for matching published checksums,
    never for trust decisions (hence ``usedforsecurity=False``, which FIPS builds need).
    """
    if not algorithms:
        raise ValueError("hash_file needs at least one algorithm")
    hashers = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            for h in hashers.values():
                h.update(chunk)
            size += len(chunk)
    return size, {name: h.hexdigest() for name, h in hashers.items()}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Lower-case hex sha256 of the file at ``path``, read in chunks."""
    return hash_file(path)[1]["sha256"]
