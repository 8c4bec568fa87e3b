"""Polite, bounded HTTP downloads of single images.

Each download is one GET with a connect/read timeout and an overall deadline (a server that
trickles bytes cannot hold a worker forever), a byte limit checked against ``Content-Length``
and while reading, and a content-type check (an HTML error page served with 200 is not an
image). Transient failures (timeouts, cut connections, 408/429/5xx) are retried with
exponential back-off by tenacity at the call site in :meth:`Fetcher.fetch`; anything else
fails at once. A per-host semaphore caps the requests one host sees at a time, whatever the
size of the caller's pool, and every request names the project in its User-Agent.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

__all__ = ["USER_AGENT", "FetchError", "FetchPolicy", "Fetched", "Fetcher", "TransientFetchError"]

USER_AGENT = "ganfolk-dataset/0.1 (+https://github.com/ganfolk; training-set collector)"
_CHUNK = 64 << 10
# application/octet-stream: object stores and some CDNs serve images without a proper type.
_ACCEPTED_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


class FetchError(Exception):
    """A download failed for good; ``category`` groups it in the report (e.g. ``HTTP 404``)."""

    def __init__(self, message: str, category: str) -> None:
        super().__init__(message)
        self.category = category


class TransientFetchError(FetchError):
    """An attempt failed in a way a later attempt may get past."""


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of one download. ``attempts`` and ``deadline_s`` bound the retries together."""

    timeout_s: float = 20.0  # connect, and each read
    deadline_s: float = 120.0  # one attempt's whole transfer, and the retries' total
    attempts: int = 4
    retry_wait_s: float = 1.0  # first back-off, doubling, at most 30 s
    max_bytes: int = 50 << 20
    per_host: int = 2
    user_agent: str = USER_AGENT


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str
    url: str  # after redirects


class Fetcher:
    """Downloads with :class:`FetchPolicy`'s limits; safe to share between threads."""

    def __init__(self, policy: FetchPolicy | None = None) -> None:
        self.policy = policy or FetchPolicy()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    @contextmanager
    def _host_slot(self, url: str) -> Iterator[None]:
        host = (urllib.parse.urlsplit(url).netloc or "").lower()
        with self._lock:
            slot = self._slots.setdefault(host, threading.BoundedSemaphore(self.policy.per_host))
        with slot:
            yield

    def fetch(self, url: str) -> Fetched:
        """GET ``url``, retrying transient failures; raises :class:`FetchError` with a reason."""
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError(f"not an http(s) URL: {url!r}", "bad url")
        p = self.policy
        retrying = Retrying(
            stop=stop_after_attempt(p.attempts) | stop_after_delay(p.deadline_s),
            wait=wait_exponential(multiplier=p.retry_wait_s, max=30),
            retry=retry_if_exception_type(TransientFetchError),
            reraise=True,
        )
        for attempt in retrying:
            with attempt, self._host_slot(url):
                return self._once(url)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _once(self, url: str) -> Fetched:
        p = self.policy
        request = urllib.request.Request(
            url, headers={"User-Agent": p.user_agent, "Accept": "image/*", "Accept-Encoding": "identity"}
        )
        started = time.monotonic()
        try:
            response = urllib.request.urlopen(request, timeout=p.timeout_s)
        except urllib.error.HTTPError as exc:
            exc.close()
            category = f"HTTP {exc.code}"
            if exc.code in (408, 425, 429) or exc.code >= 500:
                raise TransientFetchError(f"GET {url}: HTTP {exc.code} {exc.reason}", category) from None
            raise FetchError(f"GET {url}: HTTP {exc.code} {exc.reason}", category) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise TransientFetchError(
                    f"GET {url}: no answer within {p.timeout_s:g} s", "timed out"
                ) from None
            raise TransientFetchError(f"GET {url}: {reason}", "connection failed") from None
        with response:
            ctype = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype and not ctype.startswith(_ACCEPTED_TYPES):
                raise FetchError(f"GET {url}: served {ctype}, not an image", f"not an image ({ctype})")
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > p.max_bytes:
                raise FetchError(
                    f"GET {url}: {int(length):,} bytes, over the {p.max_bytes:,}-byte limit", "too large"
                )
            chunks: list[bytes] = []
            received = 0
            while True:
                if time.monotonic() - started > p.deadline_s:
                    raise TransientFetchError(
                        f"GET {url}: transfer took over {p.deadline_s:g} s (at byte {received})", "timed out"
                    )
                try:
                    chunk = response.read(_CHUNK)
                except TimeoutError:
                    raise TransientFetchError(
                        f"GET {url}: stalled for {p.timeout_s:g} s at byte {received}", "timed out"
                    ) from None
                except (OSError, http.client.HTTPException) as exc:
                    raise TransientFetchError(
                        f"GET {url}: lost at byte {received}: {exc}", "connection failed"
                    ) from None
                if not chunk:
                    break
                received += len(chunk)
                if received > p.max_bytes:
                    raise FetchError(f"GET {url}: more than {p.max_bytes:,} bytes", "too large")
                chunks.append(chunk)
            if length and length.isdigit() and received < int(length):
                raise TransientFetchError(
                    f"GET {url}: connection closed at byte {received} of {length}", "connection failed"
                )
            return Fetched(b"".join(chunks), ctype, response.geturl())
