"""The one place GANfolk computes sha256 digests of bytes and of files.

Checkpoints, object-store payloads and provenance records all name content by its
lower-case hex sha256.  Every module hashes through these functions, so a file is
always read the same way (in 1 MiB chunks, never whole into memory) and a test can
check that no second copy of a file hasher creeps back in.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["CHUNK_BYTES", "file_sha256", "file_size_sha256", "sha256_hex"]

# Large enough to keep hashing CPU-bound, small enough that a multi-GB checkpoint
# never sits in memory.
CHUNK_BYTES = 1 << 20


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """Lower-case hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_size_sha256(path: str | os.PathLike[str]) -> tuple[int, str]:
    """``(size, sha256)`` of the file at ``path``, from one read of it.

    Size and digest come from the same bytes, so a caller that streams the file
    afterwards can tell whether it changed in between.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Lower-case hex sha256 of the file at ``path``, read in chunks."""
    return file_size_sha256(path)[1]
