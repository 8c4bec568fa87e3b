"""Where a run's checkpoints go: a folder or a store prefix, one run per output, atomic and hashed.

A checkpoint is ``<iteration, 6 digits><suffix>`` (``.pt`` for StyleGAN2, ``.ckpt`` for the VQGAN)
with ``<name>.sha256`` (``sha256sum`` format) written after it, so a checkpoint counts only once its
hash is there: a crash mid-save leaves nothing that :meth:`RunOutput.latest` would pick. Files that
belong to a checkpoint (a model's ``.yaml``) are written before it and pruned with it; only the
newest ``keep`` checkpoints are kept.

One output belongs to one run: ``run.json`` records the run id, and another run writing into the
same output is refused (:meth:`RunOutput.claim`) unless it resumes that run. The model-specific
checkpoint contents are the subclasses' business (:meth:`RunOutput.prepare`, :meth:`RunOutput.validate`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import torch

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.storage import (
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    open_store,
    validate_key,
)

__all__ = ["RUN_FILE", "CheckpointError", "CheckpointRef", "RunOutput", "open_run_output", "torch_load"]

RUN_FILE = "run.json"
OutputT = TypeVar("OutputT", bound="RunOutput")


class CheckpointError(InvalidArgument):
    """A checkpoint or output cannot be used as asked; the message says what to change."""


@dataclass(frozen=True)
class CheckpointRef:
    """One complete checkpoint in an output."""

    iteration: int
    key: str
    uri: str
    sha256: str


def torch_load(
    path: Path, where: str, map_location: str | torch.device, safe: list[Any] | None = None
) -> Any:
    """``torch.load`` of tensors and plain containers only (``safe`` adds allowed classes)."""
    try:
        with torch.serialization.safe_globals(safe or []):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # garbage bytes surface as assorted errors from the zip reader / unpickler
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{where} is not a readable torch checkpoint of tensors: {first}") from None


class RunOutput:
    """Where one run's checkpoints go: ``prefix`` in ``store`` (a folder is a :class:`LocalStore`)."""

    #: File name ending of a checkpoint.
    suffix = ".pt"
    #: ``format`` recorded in ``run.json``.
    format = "ganfolk-train"
    #: Endings of the files written beside each checkpoint (before it) and pruned with it.
    sidecars: tuple[str, ...] = ()

    def __init__(self, store: ObjectStore, prefix: str = "", location: str | None = None) -> None:
        self.store = store
        self.prefix = validate_key(prefix.strip("/")) if prefix.strip("/") else ""
        self.location = location or (store.uri(self.prefix) if self.prefix else repr(store))
        self.run_id: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location})"

    def check_writable(self) -> None:
        """Write and delete a probe, so an unwritable output fails before any training."""
        key = self.key(f".write-probe-{uuid.uuid4().hex}")
        try:
            self.store.put(key, b"probe", "text/plain")
            self.store.delete(key)
        except (OSError, StorageError) as exc:
            raise CheckpointError(f"the output {self.location} is not writable: {exc}") from None

    # ------------------------------------------------------------------ model-specific hooks

    def prepare(self, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        """The payload to write for ``checkpoint``; raises on a checkpoint that lacks something."""
        return dict(checkpoint)

    def validate(self, ckpt: Any, expected: Any, where: str) -> dict[str, Any]:
        """A loaded checkpoint as a plain dict, or :class:`CheckpointError` saying what is wrong."""
        if not isinstance(ckpt, Mapping):
            raise CheckpointError(f"{where} holds a {type(ckpt).__name__}, not a training checkpoint")
        return dict(ckpt)

    def read(self, path: Path, where: str, map_location: str | torch.device) -> Any:
        """Unpickle a checkpoint file (tensors only)."""
        return torch_load(path, where, map_location)

    # ------------------------------------------------------------------ names

    def name(self, iteration: int) -> str:
        """``000100<suffix>``: the checkpoint after ``iteration`` steps."""
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        return f"{iteration:06d}{self.suffix}"

    def key(self, name: str) -> str:
        """The store key of ``name`` inside this output."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def _names(self) -> dict[str, int]:
        start = self.key("")
        return {info.key[len(start) :]: info.size for info in self.store.list(start)}

    def checkpoints(self) -> list[CheckpointRef]:
        """Complete checkpoints (those with their ``.sha256``), oldest iteration first."""
        names = self._names()
        pattern = re.compile(rf"^(\d{{6,}}){re.escape(self.suffix)}$")
        refs = []
        for name in names:
            m = pattern.match(name)
            if m and name + ".sha256" in names:
                digest = self.store.get(self.key(name + ".sha256")).decode().split()[0]
                refs.append(CheckpointRef(int(m[1]), self.key(name), self.store.uri(self.key(name)), digest))
        return sorted(refs, key=lambda r: r.iteration)

    def latest(self) -> CheckpointRef | None:
        """The newest complete checkpoint (what ``--resume latest`` loads), or None."""
        refs = self.checkpoints()
        return refs[-1] if refs else None

    # ------------------------------------------------------------------ the run guard

    def run(self) -> dict[str, Any] | None:
        """The output's ``run.json``, or None before any run claimed it."""
        try:
            run: dict[str, Any] = json.loads(self.store.get(self.key(RUN_FILE)))
        except ObjectNotFound:
            return None
        except ValueError as exc:
            raise CheckpointError(
                f"{self.location}/{RUN_FILE} is not JSON ({exc}); fix or remove it"
            ) from None
        return run

    def claim(
        self,
        run_id: str,
        *,
        resume: bool = False,
        start_iteration: int | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> str:
        """Make this output the run's; returns the run id to use from now on.

        A fresh output records ``run_id`` (and ``info``) in ``run.json``. An output of the same
        run id is reused; with ``resume`` the output's own run id is adopted. Any other run id is a
        :class:`CheckpointError`, as are checkpoints without a ``run.json`` unless resuming them, and
        (with ``start_iteration``) checkpoints newer than the one the run starts from, which the
        run's own saves would otherwise be pruned in favour of.
        """
        if not run_id or not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", run_id):
            raise CheckpointError(f"run id must be 1-128 letters, digits, '.', '_' or '-', got {run_id!r}")
        existing = self.run()
        refs = self.checkpoints()
        if existing is None:
            if refs and not resume:
                raise CheckpointError(
                    f"{self.location} already holds checkpoints ({refs[-1].key}) of an unrecorded run; "
                    "resume them (--resume latest) or choose an empty output"
                )
            record = {
                "run_id": run_id,
                "format": self.format,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                **(info or {}),
            }
            self.store.put(self.key(RUN_FILE), json.dumps(record, indent=1).encode(), "application/json")
        elif existing.get("run_id") != run_id:
            if not resume:
                raise CheckpointError(
                    f"{self.location} holds the checkpoints of run {existing.get('run_id')!r}; choose "
                    f"another output for run {run_id!r}, or resume that run (--resume latest)"
                )
            run_id = str(existing["run_id"])
        if start_iteration is not None and refs and refs[-1].iteration > start_iteration:
            raise CheckpointError(
                f"{self.location} holds {refs[-1].key}, newer than iteration {start_iteration} this run "
                "starts from; resume the latest checkpoint or choose another output"
            )
        self.run_id = run_id
        return run_id

    # ------------------------------------------------------------------ saving and loading

    def save(
        self,
        iteration: int,
        checkpoint: Mapping[str, Any],
        *,
        keep: int = 5,
        tmp_dir: str | os.PathLike[str] | None = None,
        sidecars: Mapping[str, bytes] | None = None,
    ) -> CheckpointRef:
        """Write ``checkpoint`` as ``<iteration><suffix>`` plus its ``.sha256``; keep the newest ``keep``.

        ``sidecars`` maps endings of :attr:`sidecars` to bytes stored beside the checkpoint first.
        The file is staged in ``tmp_dir`` (default: the system's) and stored atomically.
        """
        if self.run_id is None:
            raise RuntimeError("claim() the output before saving into it")
        if keep < 1:
            raise CheckpointError(f"keep must be >= 1 checkpoint, got {keep}")
        payload = self.prepare(checkpoint)
        owner = (self.run() or {}).get("run_id")
        if owner != self.run_id:
            raise CheckpointError(
                f"{self.location} was taken over by run {owner!r}; run {self.run_id!r} stops"
            )
        newest = self.latest()
        if newest is not None and newest.iteration > iteration:
            raise CheckpointError(
                f"{self.location} already holds {newest.key}, newer than iteration {iteration}"
            )
        name = self.name(iteration)
        stem = name[: -len(self.suffix)]
        for ending, data in (sidecars or {}).items():
            if ending not in self.sidecars:
                raise ValueError(f"{ending!r} is not one of this output's sidecars {self.sidecars}")
            self.store.put(self.key(stem + ending), data, "application/octet-stream")
        with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="ganfolk-ckpt-") as tmp:
            path = Path(tmp) / name
            torch.save(payload, path)
            stored = self.store.put_file(self.key(name), path)
            # Both stores hash what they upload; the fallback covers a store that does not.
            digest = stored.sha256 or file_sha256(path)
        self.store.put(self.key(name + ".sha256"), f"{digest}  {name}\n".encode(), "text/plain")
        self._prune(keep)
        return CheckpointRef(iteration, self.key(name), stored.uri, digest)

    def _prune(self, keep: int) -> None:
        kept = {r.iteration for r in self.checkpoints()[-keep:]}
        endings = "|".join(re.escape(e) for e in (self.suffix, *self.sidecars))
        pattern = re.compile(rf"^(\d{{6,}})({endings})$")
        # Older than the kept ones, complete or left half-written by a crash.
        stale = {name for name in self._names() if (m := pattern.match(name)) and int(m[1]) < min(kept)}
        for name in sorted(stale):
            # The hash goes first, so that a checkpoint never looks complete without its file.
            if name.endswith(self.suffix):
                self.store.delete(self.key(name + ".sha256"))
            self.store.delete(self.key(name))

    def load(
        self, ref: CheckpointRef, expected: Any = None, map_location: str | torch.device = "cpu"
    ) -> dict[str, Any]:
        """Read and validate ``ref`` (hash checked against its ``.sha256``)."""
        with tempfile.TemporaryDirectory(prefix="ganfolk-ckpt-") as tmp:
            path = Path(tmp) / f"checkpoint{self.suffix}"
            self.store.get_file(ref.key, path, ref.sha256)
            return self.validate(self.read(path, ref.uri, map_location), expected, ref.uri)


def open_run_output(
    output: str | os.PathLike[str], store: ObjectStore | None, kind: type[OutputT]
) -> OutputT:
    """The output named by ``output``, as a ``kind``.

    * a folder path or ``file:///folder`` (created if missing);
    * ``s3://bucket/prefix`` in ``store`` (the configured object store);
    * a store URL with the prefix in its path, opened with :func:`open_store`:
      ``s3://bucket/prefix?endpoint=host:port&secure=false`` or ``http(s)://host:port/bucket/prefix``.
    """
    text = os.fspath(output)
    if not text:
        raise CheckpointError("the checkpoint output is empty: give a folder or s3://bucket/prefix")
    scheme, sep, _ = text.partition("://")
    if not sep or scheme == "file":
        folder = Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path)) if sep else Path(text)
        if folder.exists() and not folder.is_dir():
            raise CheckpointError(f"checkpoint output {folder} is a file, not a folder")
        return kind(LocalStore(folder), "", str(folder))
    parts = urllib.parse.urlsplit(text)
    if scheme == "s3":
        bucket, path = parts.netloc.rpartition("@")[2], parts.path
    elif scheme in ("http", "https"):
        bucket, _, path = parts.path.lstrip("/").partition("/")
    else:
        raise CheckpointError(
            f"checkpoint output {text!r}: use a folder, s3://bucket/prefix or http(s)://..."
        )
    prefix = path.strip("/")
    try:
        if prefix:
            validate_key(prefix)
        if scheme == "s3" and not parts.query and "@" not in parts.netloc:
            if store is None:
                raise CheckpointError(
                    f"checkpoint output {text} is in a store but no object store was configured"
                )
            store.key_from_uri(f"s3://{bucket}/probe")
            return kind(store, prefix)
        base = parts._replace(path="" if scheme == "s3" else f"/{bucket}").geturl()
        return kind(open_store(base), prefix)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint output {text}: {exc}") from None
