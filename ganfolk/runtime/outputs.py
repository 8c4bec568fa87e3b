"""Where an operation writes its outputs: one rule for every service.

A request names its output folder itself (``output_prefix``), or its task does
(``meta.output_prefix``, set by the coordinator to ``jobs/<job>/<stage>``). A direct call
that names none gets a fresh folder under the service's configured root, so two callers
never overwrite each other's outputs. Keys under a prefix depend only on the prefix and the
request (``seed-7.png``, ``final.png``), so a retried task overwrites its own outputs
instead of adding new ones.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.storage import validate_key
from ganfolk.v1 import common_pb2


class WritesOutputs(Protocol):
    """A request message with an ``output_prefix`` field and a ``meta`` TaskMeta."""

    @property
    def output_prefix(self) -> str: ...

    @property
    def meta(self) -> common_pb2.TaskMeta: ...


def output_prefix(request: WritesOutputs, default_root: str) -> str:
    """The object-key prefix ``request``'s outputs go under, without a trailing slash.

    ``request.output_prefix``, else ``request.meta.output_prefix``, else
    ``<default_root>/<random hex>``. InvalidArgument (naming ``output_prefix``) when the prefix
    is not a valid object key, e.g. one with a ``..`` segment.
    """
    prefix = request.output_prefix or request.meta.output_prefix
    if not prefix:
        prefix = f"{default_root.strip('/')}/{uuid.uuid4().hex}"
    try:
        return validate_key(prefix.strip("/"))
    except ValueError as exc:
        raise InvalidArgument(f"output_prefix is not a valid object key: {exc}") from None
