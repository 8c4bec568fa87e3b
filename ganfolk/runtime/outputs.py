"""Where an operation writes its outputs: one rule for every service.

A request names its output folder itself (``output_prefix``), or its task does
(``meta.output_prefix``, set by the coordinator to ``jobs/<job>/<stage>``). Keys under a
prefix depend only on the prefix and the request (``seed-7.png``, ``final.png``), so a
retried task overwrites its own outputs instead of adding new ones.

Who may write where is decided by the door a request came through, never by what the
request says about itself (any gRPC caller can fill in ``meta``):

- A task, delivered by the NATS worker loop, passes its :class:`TaskMeta` as ``task``. It
  writes where it is told, except into another job's ``jobs/<other>/`` folder.
- A direct gRPC call passes no ``task``. Its outputs go under ``direct/``: the prefix it
  names is placed there (``my-run`` becomes ``direct/my-run``), and one that names no
  prefix gets a fresh ``direct/<service root>/<random hex>``, so two callers never
  overwrite each other. A prefix under ``jobs/`` is refused: a direct caller must not be
  able to replace a job's (perhaps minted) images, which their downloads would then fail
  to verify.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.storage import validate_key
from ganfolk.v1 import common_pb2

# Top-level store folders: every job's outputs, and everything direct gRPC calls write.
JOBS_ROOT = "jobs"
DIRECT_ROOT = "direct"


class WritesOutputs(Protocol):
    """A request message with an ``output_prefix`` field and a ``meta`` TaskMeta."""

    @property
    def output_prefix(self) -> str: ...

    @property
    def meta(self) -> common_pb2.TaskMeta: ...


def under(key: str, folder: str) -> bool:
    """Whether object key ``key`` is ``folder`` itself or lies inside it."""
    return key == folder or key.startswith(folder + "/")


def output_prefix(request: WritesOutputs, default_root: str, task: common_pb2.TaskMeta | None = None) -> str:
    """The object-key prefix ``request``'s outputs go under, without a trailing slash.

    ``task`` is the TaskMeta of a task the NATS worker delivered; None for a direct gRPC
    call. ``request.output_prefix``, else the task's (or, for a direct call, the request's
    ``meta``) prefix, else ``<default_root>/<random hex>``; a direct call's lands under
    ``direct/``. InvalidArgument (naming ``output_prefix``) when the prefix is not a valid
    object key, or is one the caller may not write.
    """
    meta_prefix = task.output_prefix if task is not None else request.meta.output_prefix
    return resolve_prefix(request.output_prefix or meta_prefix, default_root, task, "output_prefix")


def resolve_prefix(requested: str, default_root: str, task: common_pb2.TaskMeta | None, field: str) -> str:
    """:func:`output_prefix` for a prefix already taken from the request (``field`` names it in errors)."""
    prefix = requested.strip("/") or f"{default_root.strip('/')}/{uuid.uuid4().hex}"
    try:
        key = validate_key(prefix)
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not a valid object key: {exc}") from None
    if task is None:
        if under(key, JOBS_ROOT):
            raise InvalidArgument(
                f"{field} {key[:80]!r} is under {JOBS_ROOT}/, which only the tasks of that job write; "
                f"a direct call's outputs go under {DIRECT_ROOT}/: send a prefix such as 'my-run'"
            )
        return key if under(key, DIRECT_ROOT) else f"{DIRECT_ROOT}/{key}"
    if under(key, JOBS_ROOT):
        job = task.job_id
        # One path segment, so that job "a" cannot be told to write into job "a/b"'s folder.
        if not job or "/" in job or not under(key, f"{JOBS_ROOT}/{job}"):
            raise InvalidArgument(
                f"{field} {key[:80]!r} is another job's folder; a task of job {job[:40]!r} "
                f"writes only under {JOBS_ROOT}/{job[:40]}/"
            )
    return key
