"""Atomic, hash-verified file writes shared by both stores.

A reader must never see a half-written file: bytes go to a temp file, are hashed on
the way, and are renamed into place only when complete (and, when asked, verified).
:class:`~ganfolk.runtime.storage.local.LocalStore` keeps its objects this way;
both stores' ``get_file`` use it for the caller's destination.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ganfolk.runtime.storage.interface import IntegrityError

__all__ = ["atomic_write_chunks", "fsync_dir", "write_temp"]


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_temp(
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
        # Hashed while written, so the bytes are read once whatever their source.
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


def atomic_write_chunks(
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
    tmp, size, digest = write_temp(dest.parent, chunks, fsync=fsync, verify=verify)
    try:
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        fsync_dir(dest.parent)
    return size, digest
