"""The configuration of a VQGAN fine-tuning run, parsed the same way by the CLI and each rank.

Conventions (taming's, where it has one)
----------------------------------------
* ``--batch`` is the batch of *one* process (taming's ``data.params.batch_size``); the learning rate
  is ``base_learning_rate x batch x processes``, as taming's ``main.py`` scales it (no gradient
  accumulation here). ``--base-lr`` overrides the yaml's ``model.base_learning_rate``.
* The architecture and the loss settings (``disc_start``, ``disc_weight``, ...) come from the
  taming yaml given with ``--config``; ``--disc-start`` overrides its ``disc_start``.
* ``--steps`` counts optimiser steps of the autoencoder (taming's ``global_step``).
* ``--holdout`` images are kept out of training for the PSNR / codebook-usage figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from services.stylegan.training.config import CACHE_ENV, DEVICES, RESUME_MODES, STORE_ENV, ConfigError
from services.training.launch import add_launch_arguments

__all__ = ["LPIPS_ENV", "VQTrainConfig", "add_arguments", "config_from_args", "parse_config"]

LPIPS_ENV = "GANFOLK_TRAIN_LPIPS"


def _default_cache() -> str:
    return os.environ.get(CACHE_ENV) or str(Path("~/.cache/ganfolk/train").expanduser())


def _default_lpips() -> list[str]:
    return [p for p in os.environ.get(LPIPS_ENV, "").split(",") if p]


@dataclass
class VQTrainConfig:
    """Every option of a VQGAN run. ``None`` means "from the yaml"."""

    data: str
    out: str
    config: str
    init: str = ""
    init_sha256: str = ""
    lpips: list[str] = field(default_factory=_default_lpips)
    steps: int = 20000
    batch: int = 4
    base_lr: float | None = None
    disc_start: int | None = None
    # launch
    gpus: int = 1
    nnodes: str = "1"
    rdzv_endpoint: str = ""
    rdzv_id: str = ""
    max_restarts: int = 0
    device: str = "auto"
    dist_timeout: float = 1800.0
    # run identity and resume
    run_id: str = ""
    resume: str = "auto"
    # data and outputs
    holdout: int = 64
    xflip: bool = False
    snapshot_every: int = 1000
    keep: int = 5
    grid: int = 8
    log_every: int = 50
    seed: int = 0
    amp: bool | None = None
    workers: int = 2
    cache_dir: str = field(default_factory=_default_cache)
    store_url: str = field(default_factory=lambda: os.environ.get(STORE_ENV, ""))

    @property
    def world_min(self) -> int:
        """Processes in the smallest world this launch can form (``--nnodes`` may be ``MIN:MAX``)."""
        return self.gpus * int(self.nnodes.split(":")[0])

    def per_rank_batch(self, world_size: int) -> int:
        """The batch of one process: ``--batch`` whatever the world (taming's convention)."""
        return self.batch

    def derived_run_id(self) -> str:
        """``--run-id``, or one derived from what makes a run *this* run (see the StyleGAN2 config)."""
        if self.run_id:
            return self.run_id
        identity = {k: getattr(self, k) for k in ("data", "config", "init", "batch", "holdout", "seed")}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
        return f"vqgan-{digest}"

    def validate(self) -> VQTrainConfig:
        """Raise :class:`ConfigError` on options that cannot work, before anything is read."""
        problems: list[str] = []
        if not self.config:
            problems.append("--config (the taming .yaml of the model) is required")
        for name in ("steps", "batch", "gpus", "snapshot_every", "keep", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("holdout", "grid", "workers", "max_restarts"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.base_lr is not None and not self.base_lr > 0:
            problems.append(f"--base-lr must be > 0, got {self.base_lr}")
        if self.disc_start is not None and self.disc_start < 0:
            problems.append(f"--disc-start must be >= 0, got {self.disc_start}")
        if not self.dist_timeout > 0:
            problems.append(f"--dist-timeout must be > 0, got {self.dist_timeout}")
        lo, _, hi = self.nnodes.partition(":")
        if not (lo.isdigit() and int(lo) >= 1 and (not hi or (hi.isdigit() and int(hi) >= int(lo)))):
            problems.append(f"--nnodes must be N or MIN:MAX, got {self.nnodes!r}")
        elif (int(hi or lo) > 1) and not self.rdzv_endpoint:
            problems.append("--nnodes > 1 needs --rdzv-endpoint host:port (and --rdzv-id)")
        if self.device not in DEVICES:
            problems.append(f"--device must be one of {DEVICES}, got {self.device!r}")
        if self.resume not in RESUME_MODES:
            problems.append(f"--resume must be one of {RESUME_MODES}, got {self.resume!r}")
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types for logs, reporters and the checkpoint (never the store URL)."""
        out = asdict(self)
        out.update(iterations=self.steps, run_id=self.derived_run_id())
        out.pop("store_url")  # may carry credentials
        return out

    def to_argv(self) -> list[str]:
        """Command-line arguments that :func:`parse_config` turns back into this configuration."""
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if f.name == "store_url":
                continue  # through the environment: it may carry credentials
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
            elif isinstance(value, list):
                for item in value:
                    argv += [flag, str(item)]
            elif value is not None and value != "":
                argv += [flag, str(value)]
        return argv


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``ganfolk train vqgan`` (and of the per-rank entry)."""
    d = VQTrainConfig("", "", "")
    p.add_argument("--data", required=True, help="images: a folder, an LMDB or s3://bucket/prefix")
    p.add_argument("--out", required=True, help="checkpoints and grids: a folder or s3://bucket/prefix")
    p.add_argument("--config", required=True, help="the model's taming .yaml (path or s3:// URI)")
    p.add_argument("--init", default="", help="taming checkpoint to fine-tune (.ckpt with loss.*)")
    p.add_argument(
        "--init-sha256",
        default="",
        help="sha256 of --init: needed (and checked) when it holds more than tensors (Lightning pickles)",
    )
    p.add_argument(
        "--lpips",
        action="append",
        default=None,
        help=f"LPIPS weights when --init lacks them (repeatable; ${LPIPS_ENV}, comma-separated): an LPIPS "
        "state dict, a taming checkpoint, or torchvision's vgg16 .pth plus taming's vgg.pth",
    )
    p.add_argument("--steps", type=int, default=d.steps, help="autoencoder optimiser steps")
    p.add_argument("--batch", type=int, default=d.batch, help="images per process (taming's batch_size)")
    p.add_argument("--base-lr", type=float, help="per-image learning rate (default: the yaml's)")
    p.add_argument("--disc-start", type=int, help="step the discriminator starts at (default: the yaml's)")
    add_launch_arguments(p, d)
    o = p.add_argument_group("data and outputs")
    o.add_argument("--holdout", type=int, default=d.holdout, help="images held out for PSNR/codebook usage")
    o.add_argument("--xflip", action=argparse.BooleanOptionalAction, default=False)
    o.add_argument("--snapshot-every", type=int, default=d.snapshot_every, help="steps between checkpoints")
    o.add_argument("--keep", type=int, default=d.keep, help="checkpoints kept")
    o.add_argument(
        "--grid", type=int, default=d.grid, help="held-out images in the input|reconstruction grid"
    )
    o.add_argument("--log-every", type=int, default=d.log_every, help="steps between progress ticks")
    o.add_argument("--seed", type=int, default=d.seed)
    o.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (CUDA)")
    o.add_argument("--workers", type=int, default=d.workers, help="data loader processes per rank")
    o.add_argument("--cache-dir", default=d.cache_dir, help=f"decoded dataset cache (${CACHE_ENV})")
    o.add_argument("--store-url", default=d.store_url, help=f"object store for s3:// (${STORE_ENV})")


def config_from_args(args: argparse.Namespace) -> VQTrainConfig:
    """A validated :class:`VQTrainConfig` from :func:`add_arguments`' namespace."""
    values = {f.name: getattr(args, f.name) for f in fields(VQTrainConfig) if hasattr(args, f.name)}
    if values.get("lpips") is None:
        values.pop("lpips", None)
    return VQTrainConfig(**values).validate()


def parse_config(argv: Sequence[str]) -> tuple[VQTrainConfig, bool]:
    """``(config, check)`` from command-line arguments (argparse exits on unknown options)."""
    parser = argparse.ArgumentParser(prog="python -m services.vqgan.training.run")
    add_arguments(parser)
    args = parser.parse_args(list(argv))
    return config_from_args(args), bool(args.check)
