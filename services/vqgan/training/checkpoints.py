"""VQGAN training checkpoints in taming's (Lightning's) format, and the files a run starts from.

A checkpoint is what a taming ``VQModel`` run writes, so ``VQModel.init_from_ckpt``, Lightning's
resume and :func:`services.vqgan.load_vqgan` all read it::

    {"state_dict": {encoder.*, decoder.*, quantize.*, quant_conv.*, post_quant_conv.*, loss.*},
     "global_step", "epoch", "optimizer_states": [autoencoder, discriminator], "lr_schedulers": [],
     "pytorch-lightning_version", "ganfolk": {...}}

named ``<global_step, 6 digits>.ckpt`` with its ``.sha256`` and the model's taming ``.yaml`` beside it
(:class:`VQOutput`; the writing, hashing, pruning and run guard are :mod:`services.training.output`'s).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor, nn

from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.storage import ObjectNotFound, ObjectStore, StorageError
from services.training.output import CheckpointError, RunOutput, open_run_output
from services.vqgan.model import VQGANConfig
from services.vqgan.training.lpips import LPIPS, LPIPSError, lpips_state_from
from services.vqgan.training.objective import LossConfig

__all__ = [
    "ModelSpec",
    "VQOutput",
    "check_state",
    "fetch",
    "open_vq_output",
    "read_init",
    "read_lpips",
    "read_spec",
]

FORMAT = "taming-vqgan-train"
LIGHTNING_VERSION = "1.0.8"  # the version taming pins; only recorded
CKPT_KEYS = ("state_dict", "global_step", "optimizer_states")
DEFAULT_BASE_LR = 4.5e-6  # taming's configs


@contextmanager
def fetch(source: str, store: ObjectStore | None, what: str) -> Iterator[Path]:
    """A local path for ``source`` (a path, ``file://`` or ``s3://`` in ``store``), for the block."""
    if not source.startswith("s3://"):
        path = Path(source.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{what} not found: {path}")
        yield path
        return
    if store is None:
        raise CheckpointError(f"{what} {source} is in a store but no object store was configured")
    with tempfile.TemporaryDirectory(prefix="ganfolk-vq-") as tmp:
        path = Path(tmp) / Path(source).name
        try:
            store.get_file(store.key_from_uri(source), path)
        except ObjectNotFound:
            raise CheckpointError(f"{what} not found: {source}") from None
        except (ValueError, StorageError) as exc:
            raise CheckpointError(f"{what} {source}: {exc}") from None
        yield path


@dataclass(frozen=True)
class ModelSpec:
    """What a taming yaml says: the architecture, the loss and the per-image learning rate."""

    model: VQGANConfig
    loss: LossConfig
    base_lr: float

    def yaml(self) -> bytes:
        """A taming yaml for this model (what ``VQModel``/``load_vqgan`` read beside the checkpoint)."""
        m = asdict(self.model)
        beta = m.pop("beta")
        params: dict[str, Any] = {
            "embed_dim": m.pop("embed_dim"),
            "n_embed": m.pop("n_embed"),
            "ddconfig": {k: list(v) if isinstance(v, tuple) else v for k, v in m.items()},
            "lossconfig": self.loss.as_taming(),
        }
        if beta != 0.25:
            params["beta"] = beta
        doc = {
            "model": {
                "base_learning_rate": self.base_lr,
                "target": "taming.models.vqgan.VQModel",
                "params": params,
            }
        }
        return yaml.safe_dump(doc, sort_keys=False).encode()


def read_spec(
    path: Path, where: str, disc_start: int | None = None, base_lr: float | None = None
) -> ModelSpec:
    """The :class:`ModelSpec` of a taming yaml; :class:`CheckpointError` naming ``where`` if unusable.

    ``disc_start`` and ``base_lr`` (``--disc-start``, ``--base-lr``) replace the yaml's values, so the
    yaml written beside each checkpoint records the rate the run actually used.
    """
    try:
        model = VQGANConfig.from_yaml(path)
        doc = yaml.safe_load(path.read_text())
        section = doc.get("model", doc)
        loss = LossConfig.from_taming(section["params"].get("lossconfig"))
        yaml_lr = float(section.get("base_learning_rate", DEFAULT_BASE_LR))
    except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{where}: not a usable taming VQGAN config: {exc}") from None
    if disc_start is not None:
        loss = LossConfig(**{**asdict(loss), "disc_start": disc_start})
    if loss.disc_in_channels != model.out_ch:
        raise CheckpointError(
            f"{where}: the discriminator takes {loss.disc_in_channels} channels, "
            f"the decoder makes {model.out_ch}"
        )
    return ModelSpec(model, loss, yaml_lr if base_lr is None else float(base_lr))


def check_state(
    module: nn.Module, sd: Mapping[str, Tensor], where: str, prefixes: tuple[str, ...] = ("",)
) -> None:
    """:class:`CheckpointError` unless ``sd`` has ``module``'s keys (under ``prefixes``) and shapes."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items() if k.startswith(prefixes)}
    found = {k for k in sd if k.startswith(prefixes)}
    missing = sorted(set(expected) - found)
    unexpected = sorted(found - set(expected))
    wrong = [
        f"{k}: {tuple(sd[k].shape)} vs {s}"
        for k, s in expected.items()
        if k in sd and tuple(sd[k].shape) != s
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label} {len(items)}: {items[:4]}{' ...' if len(items) > 4 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
            if items
        ]
        raise CheckpointError(f"{where} does not match the model of --config: " + "; ".join(parts))


def _read_any(path: Path, where: str, sha256: str) -> Any:
    """Tensors only, or -- with a matching ``sha256`` -- a full (Lightning) unpickle."""
    from services.vqgan.model import _read_checkpoint

    if sha256:
        actual = file_sha256(path)
        if actual.lower() != sha256.strip().lower():
            raise CheckpointError(f"sha256 mismatch for {where}: expected {sha256}, actual {actual}")
    try:
        return _read_checkpoint(path, trusted=bool(sha256))
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc} (--init-sha256)") from None


def read_init(path: Path, where: str, sha256: str = "") -> dict[str, Tensor]:
    """The state dict of a taming checkpoint (``{"state_dict": ...}`` or bare)."""
    obj = _read_any(path, where, sha256)
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{where}: no state dict found (expected {{'state_dict': ...}})")
    return {k: v for k, v in sd.items() if isinstance(v, Tensor)}


def read_lpips(init_state: Mapping[str, Tensor] | None, sources: list[tuple[str, Any]]) -> dict[str, Tensor]:
    """The LPIPS weights: ``--init``'s ``loss.perceptual_loss.*``, completed by the loaded ``--lpips``
    files (``(where, contents)``).

    Raises :class:`CheckpointError` when no complete set comes together: training with a random
    perceptual network would silently optimise for noise.
    """
    states: list[tuple[str, Mapping[str, Tensor]]] = []
    if init_state is not None:
        states.append(("--init", init_state))
    for where, obj in sources:
        sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"{where}: no state dict found")
        states.append((where, sd))
    merged = lpips_state_from(states)
    try:
        LPIPS().load(merged, " + ".join(w for w, _ in states) or "no source")
    except LPIPSError as exc:
        raise CheckpointError(
            f"no LPIPS weights: {exc}. The public taming checkpoints carry them (loss.perceptual_loss.*, "
            "give one with --init); otherwise point --lpips (or GANFOLK_TRAIN_LPIPS) at an LPIPS state "
            "dict, or at torchvision's vgg16 .pth together with taming's vgg.pth"
        ) from None
    return merged


class VQOutput(RunOutput):
    """A run output of taming VQGAN checkpoints (``.ckpt``) with the model's ``.yaml`` beside each."""

    suffix = ".ckpt"
    format = FORMAT
    sidecars = (".yaml",)

    def prepare(self, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        missing = [k for k in CKPT_KEYS if k not in checkpoint]
        if missing:
            raise ValueError(f"VQGAN checkpoint lacks {missing}")
        return {"epoch": 0, "pytorch-lightning_version": LIGHTNING_VERSION, "lr_schedulers": [], **checkpoint}

    def validate(self, ckpt: Any, expected: Any, where: str) -> dict[str, Any]:
        if not isinstance(ckpt, Mapping) or any(k not in ckpt for k in CKPT_KEYS):
            raise CheckpointError(
                f"{where} is not a VQGAN training checkpoint (needs {', '.join(CKPT_KEYS)})"
            )
        states = ckpt["optimizer_states"]
        if not isinstance(states, list) or len(states) != 2:
            raise CheckpointError(
                f"{where}: optimizer_states must hold the autoencoder's and the discriminator's"
            )
        return dict(ckpt)


def open_vq_output(output: str | os.PathLike[str], store: ObjectStore | None = None) -> VQOutput:
    """The VQGAN run output named by ``output`` (a folder or a store prefix)."""
    return open_run_output(output, store, VQOutput)
