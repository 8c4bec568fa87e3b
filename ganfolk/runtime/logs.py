"""One logging setup: JSON lines on stdout carrying the service and the job being worked on,
with every configured secret masked (:mod:`ganfolk.runtime.redact`)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from ganfolk.runtime.redact import redact

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "ganfolk_log_context", default=None
)
_service = "ganfolk"
# Attributes every LogRecord has; anything else was passed with `extra=` and is logged.
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": _service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_context.get() or {})
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # Configured secrets and URL credentials never reach a log line, whoever logged them
        # (our code, an HTTP library echoing a request URL, an exception's text). Strings are
        # masked before encoding, where they are still as configured; the line once more after,
        # for values nested in lists and mappings.
        entry = {k: redact(v) if isinstance(v, str) else v for k, v in entry.items()}
        return redact(json.dumps(entry, default=lambda o: redact(str(o))))


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route every logger to stdout as JSON; call once per process."""
    global _service
    _service = service
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("nats", "grpc", "botocore", "urllib3", "httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (job_id, task_id, stage, ...) to every log line in this context."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)
