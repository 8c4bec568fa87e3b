"""Errors the core raises, and how they map to gRPC status codes and NATS ack decisions.

Core modules raise the exceptions below; the gRPC interceptor and the worker loop both
translate them with :func:`classify`, so a bad argument (:class:`InvalidArgument`) is
``INVALID_ARGUMENT`` on gRPC and a terminated (not retried) task on NATS.

Only :class:`InvalidArgument` blames the caller. Any other ``ValueError`` (a library's, or
one of our own assertions) is a bug or a broken deployment: ``INTERNAL`` on gRPC, so the
caller is not told to fix a request that was fine, and on NATS a retried task like every
unknown failure -- the retries are bounded by the stage's max_deliver, after which the task
goes to the dead-letter subject, where it can be replayed once the bug is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from ganfolk.runtime.redact import redact
from ganfolk.runtime.storage import IntegrityError, ObjectNotFound


class InvalidArgument(ValueError):
    """The request cannot succeed as sent; the message says what to fix.

    A ``ValueError`` subclass so that code validating with ``except ValueError`` keeps
    working; :func:`classify` checks for this class, not for ``ValueError``.
    """


class NotFound(LookupError):
    """A named thing (job, object, checkpoint) does not exist."""


class FailedPrecondition(RuntimeError):
    """The system is not in a state where the request can run (e.g. job already finished)."""


class Conflict(RuntimeError):
    """The caller acted on a state that has changed since it read it (another writer won);
    re-read and decide again. ABORTED on gRPC."""


class ResourceExhausted(RuntimeError):
    """The request is too large for this replica (memory, pixels); the message says which knob to lower."""


class Transient(RuntimeError):
    """A dependency is temporarily unavailable; retrying later may succeed."""


@dataclass(frozen=True)
class Classified:
    code: grpc.StatusCode
    retryable: bool


_PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.CANCELLED,
    # A conflict needs the caller to re-read and decide again, not a blind retry.
    grpc.StatusCode.ABORTED,
}


def classify(exc: BaseException) -> Classified:
    """Map an exception to a status code and whether a retry may help."""
    if isinstance(exc, IntegrityError):
        code = grpc.StatusCode.DATA_LOSS
    elif isinstance(exc, ObjectNotFound | NotFound | FileNotFoundError):
        code = grpc.StatusCode.NOT_FOUND
    elif isinstance(exc, InvalidArgument):
        code = grpc.StatusCode.INVALID_ARGUMENT
    elif isinstance(exc, FailedPrecondition):
        code = grpc.StatusCode.FAILED_PRECONDITION
    elif isinstance(exc, Conflict):
        code = grpc.StatusCode.ABORTED
    elif isinstance(exc, ResourceExhausted | MemoryError):
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
    elif isinstance(exc, Transient | TimeoutError | ConnectionError):
        code = grpc.StatusCode.UNAVAILABLE
    else:
        # Unknown failures, plain ValueErrors included, are retried (bounded by max_deliver):
        # they may be a flaky GPU or node; a deterministic bug ends in the dead-letter subject.
        code = grpc.StatusCode.INTERNAL
    return Classified(code, code not in _PERMANENT)


def describe(exc: BaseException) -> str:
    """The text of a failure as callers and job records see it (gRPC details, a task's
    failure reason): a configured secret or URL credential in it is masked."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    return redact(text)
