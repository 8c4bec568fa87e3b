"""HTTP downloads that survive cut connections: a ``.part`` file resumed with a Range request.

One attempt streams into ``<dest>.part``; a connection that closes early, stalls past the read
timeout or answers 5xx/429 is transient, and the next attempt (tenacity, at the call site)
asks for ``Range: bytes=<what we have>-``. A server that ignores the range (200) restarts the
file; one that answers 416 to a complete ``.part`` finishes it. 4xx answers fail at once
with the URL and status.
"""

from __future__ import annotations

import http.client
import logging
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from tqdm import tqdm

from ganfolk.runtime.hashing import hash_file

__all__ = ["ChecksumError", "DownloadError", "TransientDownloadError", "download", "file_digests"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "ganfolk-models-pull/0.1 (+python-urllib)"
_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE_RE = re.compile(r"^bytes\s+\*/(\d+)$")


class DownloadError(RuntimeError):
    """A download failed for good: a 4xx answer, a bad reply, or every retry used up."""


class TransientDownloadError(DownloadError):
    """One attempt failed in a way the next attempt may get past (it resumes the .part)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the published digest; the file has been deleted."""

    def __init__(self, what: str, algorithm: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{algorithm} mismatch for {what}: expected {expected}, got {actual} (the download was deleted)"
        )
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str
    md5: str


def file_digests(path: Path) -> Digests:
    """Size, sha256 and md5 of a file in one pass."""
    size, digests = hash_file(path, ("sha256", "md5"))
    return Digests(size, digests["sha256"], digests["md5"])


def _part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, label: str) -> None:
    """One attempt: resume ``part`` from its current size to the end of ``url``."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            m = _UNSATISFIED_RANGE_RE.match(exc.headers.get("Content-Range", "") or "")
            if m and int(m.group(1)) == offset:
                return  # the .part already holds every byte
            part.unlink(missing_ok=True)
            raise TransientDownloadError(f"GET {url}: the server refused a resume at byte {offset}") from None
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise TransientDownloadError(f"GET {url}: HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"GET {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise TransientDownloadError(f"GET {url}: no answer within {timeout:g} s") from exc
        raise TransientDownloadError(f"GET {url}: {reason}") from exc

    with response:
        total: int | None
        if response.status == 206 and offset:
            m = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", "") or "")
            if not m or int(m.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise TransientDownloadError(
                    f"GET {url}: asked to resume at byte {offset}, got Content-Range "
                    f"{response.headers.get('Content-Range')!r}; starting over"
                )
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        elif response.status == 200:
            if offset:
                log.info("%s ignored the range request; downloading from the start", url)
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"GET {url}: unexpected HTTP {response.status}")
        received = offset
        with (
            part.open(mode) as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
                disable=not progress,
                leave=True,
            ) as bar,
        ):
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except TimeoutError as exc:
                    raise TransientDownloadError(
                        f"GET {url}: stalled for {timeout:g} s at byte {received} (read timeout)"
                    ) from exc
                except (OSError, http.client.HTTPException) as exc:
                    raise TransientDownloadError(f"GET {url}: lost at byte {received}: {exc}") from exc
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise TransientDownloadError(f"GET {url}: connection closed at byte {received} of {total}")
    if total is not None and received > total:
        part.unlink(missing_ok=True)
        raise DownloadError(f"GET {url}: got {received} bytes, more than the {total} announced")


def _log_retry(state: RetryCallState) -> None:
    exc: Any = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    print(f"  {exc}; retrying in {wait:.1f} s (attempt {state.attempt_number + 1})", file=sys.stderr)


def download(
    url: str,
    dest: Path,
    *,
    timeout: float = 30.0,
    attempts: int = 5,
    retry_wait: float = 1.0,
    progress: bool = True,
    label: str | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resuming ``<dest>.part`` left by an earlier try.

    Args:
        timeout: seconds to wait for a connection and for each read (a stalled server fails).
        attempts: tries in all; each one resumes where the previous stopped.
        retry_wait: first back-off in seconds, doubling, at most 30 s.
        progress: draw a progress bar on stderr.

    Raises:
        DownloadError: a 4xx answer (the message names the URL and status), an over-long body,
            or ``attempts`` transient failures (the ``.part`` is kept for the next run).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_of(dest)
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=retry_wait, max=30),
            retry=retry_if_exception_type(TransientDownloadError),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                _fetch_once(url, part, timeout, progress, label or dest.name)
    except TransientDownloadError as exc:
        have = part.stat().st_size if part.exists() else 0
        raise DownloadError(
            f"{exc} -- gave up after {attempts} attempt(s); {have} bytes kept in {part}, "
            "run the pull again to resume"
        ) from exc
    part.replace(dest)
    return dest
