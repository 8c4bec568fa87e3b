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
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from ganfolk.runtime.storage.interface import IntegrityError

__all__ = ["DirSyncer", "atomic_write_chunks", "fsync_dir", "write_temp"]


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DirSyncer:
    """``fsync`` of directories, shared by the threads of a process, with group commit.

    Writers that renamed into the same directory at about the same time need one
    ``fsync`` between them, not one each: a writer whose rename happened before a sync
    *started* is covered by it. Concurrent puts of one job's images (same directory)
    then cost one directory sync instead of one each, which under disk contention is
    most of a put's time.
    """

    class _Dir:
        __slots__ = ("guard", "lock", "requested", "synced")

        def __init__(self) -> None:
            self.guard = threading.Lock()  # protects the counters
            self.lock = threading.Lock()  # one fsync of the directory at a time
            self.requested = 0
            self.synced = 0

    # Directories remembered; one forgotten while in use only loses coalescing.
    MAX_DIRS = 1024

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._dirs: OrderedDict[Path, DirSyncer._Dir] = OrderedDict()

    def sync(self, path: Path) -> None:
        """Make every rename already done in ``path`` durable (best effort, like :func:`fsync_dir`)."""
        with self._guard:
            state = self._dirs.get(path)
            if state is None:
                state = self._dirs[path] = DirSyncer._Dir()
                while len(self._dirs) > self.MAX_DIRS:
                    self._dirs.popitem(last=False)
            else:
                self._dirs.move_to_end(path)
        with state.guard:
            state.requested += 1
            mine = state.requested
        with state.lock:
            with state.guard:
                if state.synced >= mine:  # a sync that started after our rename has finished
                    return
                target = state.requested
            fsync_dir(path)
            with state.guard:
                state.synced = max(state.synced, target)


def write_temp(
    tmp_dir: Path,
    chunks: Iterable[bytes],
    *,
    fsync: bool = True,
    verify: tuple[str, str | None] | None = None,
) -> tuple[Path, int, str]:
    """Write ``chunks`` to a new temp file in ``tmp_dir``; return ``(path, size, sha256)``.

    With ``verify=(key, expected)`` a hash mismatch raises :class:`IntegrityError`
    (and the temp file is removed). The bytes are hashed while written, so a caller
    that has no hash yet should take this one rather than hash the bytes itself.
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
