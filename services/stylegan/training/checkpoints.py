"""Rosinality StyleGAN2 training checkpoints, kept in a folder or under a store prefix.

A checkpoint is what rosinality's ``train.py`` writes, so either side can resume the other's runs::

    {"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}

with ``args`` a plain dict (rosinality's ``argparse.Namespace`` is accepted on load) and the file
named ``<iteration, 6 digits>.pt``. Beside each goes ``<name>.sha256`` (``sha256sum`` format),
written after the checkpoint itself, so a checkpoint counts only once its hash is there: a crash
mid-save leaves nothing that :meth:`CheckpointOutput.latest` would pick. Only the newest ``keep``
are kept.

One output belongs to one run: ``run.json`` records the run id, and another run writing into the
same output is refused (:meth:`CheckpointOutput.claim`) unless it resumes that run.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.parse
from argparse import Namespace
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.storage import LocalStore, ObjectNotFound, ObjectStore, open_store, validate_key
from services.stylegan.model import GeneratorConfig

__all__ = [
    "RUN_FILE",
    "TRAINING_KEYS",
    "CheckpointError",
    "CheckpointOutput",
    "CheckpointRef",
    "checkpoint_name",
    "discriminator_size",
    "latest",
    "load_training_checkpoint",
    "open_output",
    "validate_training_checkpoint",
]

TRAINING_KEYS = ("g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p")
_STATE_KEYS = ("g", "d", "g_ema", "g_optim", "d_optim")
RUN_FILE = "run.json"
FORMAT = "rosinality-stylegan2-train"
_NAME = re.compile(r"^(\d{6,})\.pt$")


class CheckpointError(InvalidArgument):
    """A checkpoint or output cannot be used as asked; the message says what to change."""


@dataclass(frozen=True)
class CheckpointRef:
    """One complete checkpoint in an output."""

    iteration: int
    key: str
    uri: str
    sha256: str


def checkpoint_name(iteration: int) -> str:
    """``000100.pt``: rosinality's name for the checkpoint after ``iteration`` steps."""
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    return f"{iteration:06d}.pt"


# --------------------------------------------------------------------------- validation


def discriminator_size(sd: Mapping[str, Any]) -> int:
    """Resolution of a rosinality ``Discriminator`` state dict: 4 px times 2 per ResBlock ``convs.N``."""
    blocks = {m[1] for k in sd if (m := re.fullmatch(r"convs\.(\d+)\.conv1\.0\.weight", k))}
    if not blocks or "final_linear.1.weight" not in sd:
        raise ValueError(
            "not a rosinality StyleGAN2 discriminator state dict (no convs.N.conv1 / final_linear)"
        )
    return 4 * 2 ** len(blocks)


def validate_training_checkpoint(ckpt: Any, expected_size: int | None, where: str) -> dict[str, Any]:
    """``ckpt`` as a plain training-checkpoint dict, or :class:`CheckpointError` saying what is wrong.

    The resolution is read from the tensors (``to_rgbs`` of ``g``/``g_ema``, ResBlocks of ``d``), which
    must agree with each other and with ``expected_size`` when given. ``args`` becomes a dict and a
    missing ``ada_aug_p`` (checkpoints from before ADA) becomes 0.
    """
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(
            f"{where} is not a StyleGAN2 training checkpoint: it holds a {type(ckpt).__name__}"
        )
    missing = [k for k in _STATE_KEYS if k not in ckpt]
    if missing == [k for k in _STATE_KEYS if k != "g_ema"]:
        raise CheckpointError(
            f"{where} holds only a generator (g_ema), a checkpoint for sampling: resuming training needs "
            f"{', '.join(_STATE_KEYS)}; start a new run (fine-tuning from it is the trainer's choice)"
        )
    if missing:
        raise CheckpointError(
            f"{where} is not a StyleGAN2 training checkpoint: it lacks {missing} "
            f"(found {sorted(map(str, ckpt))})"
        )
    sizes: dict[str, int] = {}
    part = "g"
    try:
        for part in ("g", "g_ema"):
            sizes[part] = GeneratorConfig.from_state_dict(ckpt[part]).size
        part = "d"
        sizes[part] = discriminator_size(ckpt[part])
    except (ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:
        raise CheckpointError(f"{where}: '{part}' is not a StyleGAN2 state dict: {exc}") from None
    if len(set(sizes.values())) != 1:
        raise CheckpointError(f"{where}: its networks disagree on the resolution: {sizes}")
    size = sizes["g"]
    if expected_size is not None and size != expected_size:
        raise CheckpointError(
            f"{where} is a {size} px StyleGAN2 checkpoint but this run trains at {expected_size} px; "
            f"resume it at {size} px or start a new output"
        )
    for key in ("g_optim", "d_optim"):
        if not isinstance(ckpt[key], Mapping) or "state" not in ckpt[key]:
            raise CheckpointError(f"{where}: '{key}' is not an optimizer state dict")
    args = ckpt.get("args", {})
    if isinstance(args, Namespace):
        args = vars(args)
    if not isinstance(args, Mapping):
        raise CheckpointError(f"{where}: 'args' is a {type(args).__name__}, expected a dict")
    out = dict(ckpt)
    out["args"] = dict(args)
    out["ada_aug_p"] = float(ckpt.get("ada_aug_p", 0.0))
    return out


def _torch_load(path: Path, where: str, map_location: str | torch.device) -> Any:
    try:
        # Namespace is allowed: rosinality's train.py stores its args that way.
        with torch.serialization.safe_globals([Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # garbage bytes surface as assorted errors from the zip reader / unpickler
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{where} is not a readable torch checkpoint of tensors: {first}") from None


# --------------------------------------------------------------------------- outputs


class CheckpointOutput:
    """Where one run's checkpoints go: ``prefix`` in ``store`` (a folder is a :class:`LocalStore`)."""

    def __init__(self, store: ObjectStore, prefix: str = "", location: str | None = None) -> None:
        self.store = store
        self.prefix = validate_key(prefix.strip("/")) if prefix.strip("/") else ""
        self.location = location or (store.uri(self.prefix) if self.prefix else repr(store))
        self.run_id: str | None = None

    def __repr__(self) -> str:
        return f"CheckpointOutput({self.location})"

    def key(self, name: str) -> str:
        """The store key of ``name`` inside this output."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def _names(self) -> dict[str, int]:
        start = self.key("")
        return {info.key[len(start) :]: info.size for info in self.store.list(start)}

    def checkpoints(self) -> list[CheckpointRef]:
        """Complete checkpoints (those with their ``.sha256``), oldest iteration first."""
        names = self._names()
        refs = []
        for name in names:
            m = _NAME.match(name)
            if m and name + ".sha256" in names:
                digest = self.store.get(self.key(name + ".sha256")).decode().split()[0]
                refs.append(CheckpointRef(int(m[1]), self.key(name), self.store.uri(self.key(name)), digest))
        return sorted(refs, key=lambda r: r.iteration)

    def latest(self) -> CheckpointRef | None:
        """The newest complete checkpoint (what ``--resume latest`` loads), or None."""
        refs = self.checkpoints()
        return refs[-1] if refs else None

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
                "format": FORMAT,
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

    def save(
        self,
        iteration: int,
        checkpoint: Mapping[str, Any],
        *,
        keep: int = 5,
        tmp_dir: str | os.PathLike[str] | None = None,
    ) -> CheckpointRef:
        """Write ``checkpoint`` as ``<iteration>.pt`` plus its ``.sha256``; keep only the newest ``keep``.

        ``checkpoint`` holds :data:`TRAINING_KEYS` (state dicts, ``args`` as a dict or Namespace,
        ``ada_aug_p``). The file is staged in ``tmp_dir`` (default: the system's) and stored atomically.
        """
        if self.run_id is None:
            raise RuntimeError("claim() the output before saving into it")
        if keep < 1:
            raise CheckpointError(f"keep must be >= 1 checkpoint, got {keep}")
        missing = [k for k in TRAINING_KEYS if k not in checkpoint]
        if missing:
            raise ValueError(f"training checkpoint lacks {missing}")
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
        args = checkpoint["args"]
        payload = {**checkpoint, "args": dict(vars(args) if isinstance(args, Namespace) else args)}
        payload["ada_aug_p"] = float(checkpoint["ada_aug_p"])
        name = checkpoint_name(iteration)
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
        # Older than the kept ones, complete or left half-written by a crash.
        stale = {
            m[1]
            for name in self._names()
            if (m := re.match(r"^((\d{6,})\.pt)(\.sha256)?$", name)) and int(m[2]) < min(kept)
        }
        for name in sorted(stale):
            # The hash goes first, so that a checkpoint never looks complete without its file.
            self.store.delete(self.key(name + ".sha256"))
            self.store.delete(self.key(name))

    def load(
        self, ref: CheckpointRef, expected_size: int | None = None, map_location: str | torch.device = "cpu"
    ) -> dict[str, Any]:
        """Read and validate ``ref`` (hash checked against its ``.sha256``)."""
        with tempfile.TemporaryDirectory(prefix="ganfolk-ckpt-") as tmp:
            path = Path(tmp) / "checkpoint.pt"
            self.store.get_file(ref.key, path, ref.sha256)
            return validate_training_checkpoint(
                _torch_load(path, ref.uri, map_location), expected_size, ref.uri
            )


def open_output(output: str | os.PathLike[str], store: ObjectStore | None = None) -> CheckpointOutput:
    """The checkpoint output named by ``output``.

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
        return CheckpointOutput(LocalStore(folder), "", str(folder))
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
            return CheckpointOutput(store, prefix)
        base = parts._replace(path="" if scheme == "s3" else f"/{bucket}").geturl()
        return CheckpointOutput(open_store(base), prefix)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint output {text}: {exc}") from None


def latest(output: str | os.PathLike[str], store: ObjectStore | None = None) -> CheckpointRef | None:
    """The newest complete checkpoint in ``output`` (see :func:`open_output`), or None."""
    return open_output(output, store).latest()


def load_training_checkpoint(
    source: str | os.PathLike[str],
    expected_size: int | None = None,
    *,
    store: ObjectStore | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load and validate a training checkpoint from a path or ``s3://bucket/key`` in ``store``.

    When ``<file>.sha256`` lies beside it the file is checked against it first. See
    :func:`validate_training_checkpoint` for what is checked and returned.
    """
    text = os.fspath(source)
    with tempfile.TemporaryDirectory(prefix="ganfolk-ckpt-") as tmp:
        if text.startswith("s3://"):
            if store is None:
                raise CheckpointError(f"{text} is in a store but no object store was configured")
            try:
                key = store.key_from_uri(text)
                digest = store.get(key + ".sha256").decode().split()[0]
            except ValueError as exc:
                raise CheckpointError(f"checkpoint {text}: {exc}") from None
            except ObjectNotFound:
                digest = None
            path = Path(tmp) / "checkpoint.pt"
            try:
                store.get_file(key, path, digest)
            except ObjectNotFound:
                raise CheckpointError(f"checkpoint not found: {text}") from None
        else:
            path = (
                Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path)) if "://" in text else Path(text)
            )
            if not path.is_file():
                raise CheckpointError(f"checkpoint not found: {path}")
            side = path.with_name(path.name + ".sha256")
            if side.is_file() and (expected := side.read_text().split()[0]) != (actual := file_sha256(path)):
                raise CheckpointError(
                    f"{path} does not match {side.name}: sha256 {actual}, expected {expected}"
                )
        return validate_training_checkpoint(_torch_load(path, text, map_location), expected_size, text)
