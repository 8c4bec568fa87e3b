"""How exceptions map to gRPC codes and NATS retry decisions: only InvalidArgument blames the caller."""

from __future__ import annotations

import grpc
import pytest

from ganfolk.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Transient,
    classify,
)
from ganfolk.runtime.storage import IntegrityError, ObjectNotFound


@pytest.mark.parametrize(
    ("exc", "code", "retryable"),
    [
        (InvalidArgument("top_k is too large"), grpc.StatusCode.INVALID_ARGUMENT, False),
        # A ValueError that is not InvalidArgument is a bug or a broken deployment, not the caller's
        # fault: INTERNAL, and retried (bounded by max_deliver) like every unknown failure.
        (ValueError("math domain error"), grpc.StatusCode.INTERNAL, True),
        (KeyError("x"), grpc.StatusCode.INTERNAL, True),
        (NotFound("no job"), grpc.StatusCode.NOT_FOUND, False),
        (ObjectNotFound("a/b.png"), grpc.StatusCode.NOT_FOUND, False),
        (IntegrityError("a", "0" * 64, "1" * 64), grpc.StatusCode.DATA_LOSS, False),
        (FailedPrecondition("finished"), grpc.StatusCode.FAILED_PRECONDITION, False),
        (ResourceExhausted("too big"), grpc.StatusCode.RESOURCE_EXHAUSTED, False),
        (Transient("busy"), grpc.StatusCode.UNAVAILABLE, True),
        (TimeoutError(), grpc.StatusCode.UNAVAILABLE, True),
    ],
)
def test_classify(exc: BaseException, code: grpc.StatusCode, retryable: bool) -> None:
    verdict = classify(exc)
    assert (verdict.code, verdict.retryable) == (code, retryable)


def test_invalid_argument_is_still_a_value_error() -> None:
    # Validation code that catches ValueError (e.g. to add context) keeps catching it.
    with pytest.raises(ValueError, match="bad"):
        raise InvalidArgument("bad")


def test_image_validation_blames_the_caller() -> None:
    from ganfolk.runtime.images import decode_image

    with pytest.raises(InvalidArgument, match="empty"):
        decode_image(b"", 100)
    with pytest.raises(InvalidArgument, match="not an image"):
        decode_image(b"definitely not a picture", 100)
