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

import os
import re
import tempfile
import urllib.parse
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.storage import ObjectNotFound, ObjectStore
from services.stylegan.model import GeneratorConfig
from services.training.output import (
    RUN_FILE,
    CheckpointError,
    CheckpointRef,
    RunOutput,
    open_run_output,
    torch_load,
)

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
FORMAT = "rosinality-stylegan2-train"
_NAME = re.compile(r"^(\d{6,})\.pt$")


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
    # Namespace is allowed: rosinality's train.py stores its args that way.
    return torch_load(path, where, map_location, [Namespace])


# --------------------------------------------------------------------------- outputs


class CheckpointOutput(RunOutput):
    """A run output of rosinality training checkpoints (see :class:`~services.training.output.RunOutput`)."""

    suffix = ".pt"
    format = FORMAT

    def prepare(self, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        """:data:`TRAINING_KEYS` required; ``args`` stored as a dict, ``ada_aug_p`` as a float."""
        missing = [k for k in TRAINING_KEYS if k not in checkpoint]
        if missing:
            raise ValueError(f"training checkpoint lacks {missing}")
        args = checkpoint["args"]
        payload = {**checkpoint, "args": dict(vars(args) if isinstance(args, Namespace) else args)}
        payload["ada_aug_p"] = float(checkpoint["ada_aug_p"])
        return payload

    def validate(self, ckpt: Any, expected: Any, where: str) -> dict[str, Any]:
        """See :func:`validate_training_checkpoint`; ``expected`` is the resolution, or None."""
        return validate_training_checkpoint(ckpt, expected, where)

    def read(self, path: Path, where: str, map_location: str | torch.device) -> Any:
        """Unpickle tensors and rosinality's ``args`` Namespace."""
        return _torch_load(path, where, map_location)


def open_output(output: str | os.PathLike[str], store: ObjectStore | None = None) -> CheckpointOutput:
    """The checkpoint output named by ``output``.

    * a folder path or ``file:///folder`` (created if missing);
    * ``s3://bucket/prefix`` in ``store`` (the configured object store);
    * a store URL with the prefix in its path, opened with :func:`open_store`:
      ``s3://bucket/prefix?endpoint=host:port&secure=false`` or ``http(s)://host:port/bucket/prefix``.
    """
    return open_run_output(output, store, CheckpointOutput)


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
