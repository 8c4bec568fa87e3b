"""The configuration of a StyleGAN2-ADA training run, parsed the same way by the CLI and each rank.

``ganfolk train stylegan ...`` and the per-rank entry that ``torchrun`` launches
(``python -m services.stylegan.training.run ...``) share :func:`add_arguments`; the CLI hands
the ranks its resolved options back as arguments (:meth:`TrainConfig.to_argv`).

Defaults and the choices behind them
------------------------------------
* ``--batch`` is the *global* batch over all processes (StyleGAN2-ADA's convention; the
  per-process batch is ``batch / world size``). rosinality's per-GPU ``batch`` is what lands in
  the checkpoint's ``args``.
* Losses and schedules are StyleGAN2's: non-saturating logistic loss, lazy R1 every 16 D
  steps, lazy path-length regularisation (weight 2, every 4 G steps, on half the batch), style
  mixing with probability 0.9, Adam lr 0.002 and betas (0, 0.99) with the lazy-regularisation
  correction applied by the loop.
* Where the issue leaves a value open, ADA's ``auto`` configuration decides:
  ``gamma = 0.0002 * size**2 / batch``, EMA half-life ``batch * 10 / 32`` kimg with a ramp-up of
  0.05 (the half-life is at most 5 % of the images seen so far), minibatch-stddev groups of
  ``min(per-process batch, 4)``, ADA target 0.6 adjusted every 4 steps with a 500 kimg swing.
* The architecture is rosinality's (channel multiplier 2, 8 mapping layers, style 512) rather
  than ADA-auto's narrower one: checkpoints then load in rosinality's ``train.py`` and public
  rosinality checkpoints can be fine-tuned. ``--fmap-max`` caps every width (tiny test nets).
* ``--amp`` (bf16 autocast) and ``--channels-last`` default to on for CUDA and off for the CPU.
* ``--threads`` caps torch's CPU threads per process. OpenMP threads spin while they wait for one
  another, so on cores that other work shares, more threads can be far slower: a 32 px step with
  2 threads on 2 busy cores measured 10x slower than with 1. ``torchrun`` already sets
  ``OMP_NUM_THREADS=1`` for each of several processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from services.stylegan.model import DiscriminatorConfig, GeneratorConfig
from services.stylegan.training.augment import AugmentSpec, parse_augment
from services.training.launch import DEVICES, RESUME_MODES, STORE_ENV, ConfigError, add_launch_arguments

__all__ = ["ConfigError", "TrainConfig", "add_arguments", "config_from_args", "parse_config"]

CACHE_ENV = "GANFOLK_TRAIN_CACHE"


def _default_cache() -> str:
    return os.environ.get(CACHE_ENV) or str(Path("~/.cache/ganfolk/train").expanduser())


@dataclass
class TrainConfig:
    """Every option of a run. ``None`` means "derive it" (see the module docstring)."""

    data: str
    out: str
    size: int
    batch: int = 32
    kimg: float | None = None
    iterations: int | None = None
    # launch
    gpus: int = 1
    nnodes: str = "1"
    rdzv_endpoint: str = ""
    rdzv_id: str = ""
    max_restarts: int = 0
    device: str = "auto"
    # run identity and resume
    run_id: str = ""
    resume: str = "auto"
    resume_from: str = ""
    # losses and optimiser
    lr: float = 0.002
    gamma: float | None = None
    r1_every: int = 16
    path_weight: float = 2.0
    path_every: int = 4
    path_batch_shrink: int = 2
    mixing: float = 0.9
    ema_kimg: float | None = None
    ema_rampup: float = 0.05
    # augmentation
    aug: str = "ada"
    ada_target: float = 0.6
    ada_kimg: float = 500.0
    ada_every: int = 4
    xflip: bool = False
    # architecture
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    fmap_max: int = 512
    mbstd_group: int = 4
    # performance
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    workers: int = 2
    threads: int = 0
    # outputs
    snapshot_kimg: float = 50.0
    keep: int = 5
    grid: int = 16
    metric_images: int = 1000
    log_every: int = 50
    seed: int = 0
    cache_dir: str = field(default_factory=_default_cache)
    store_url: str = field(default_factory=lambda: os.environ.get(STORE_ENV, ""))
    dist_timeout: float = 1800.0

    # ------------------------------------------------------------------ derived values

    @property
    def augment(self) -> AugmentSpec:
        """``--aug`` parsed."""
        return parse_augment(self.aug)

    @property
    def world_min(self) -> int:
        """Processes in the smallest world this launch can form (``--nnodes`` may be ``MIN:MAX``)."""
        return self.gpus * int(self.nnodes.split(":")[0])

    def per_rank_batch(self, world_size: int) -> int:
        """The batch of one process; an error unless the global batch splits evenly."""
        if self.batch % world_size:
            raise ConfigError(
                f"--batch {self.batch} (the global batch) does not split over {world_size} processes; "
                f"use a multiple of {world_size}"
            )
        return self.batch // world_size

    def resolved_gamma(self) -> float:
        """R1 weight: ``--gamma`` or ADA-auto's ``0.0002 * size**2 / batch``."""
        return self.gamma if self.gamma is not None else 0.0002 * self.size**2 / self.batch

    def resolved_ema_kimg(self) -> float:
        """EMA half-life in kimg: ``--ema-kimg`` or ADA-auto's ``batch * 10 / 32``."""
        return self.ema_kimg if self.ema_kimg is not None else self.batch * 10 / 32

    def total_iterations(self) -> int:
        """Steps of the whole run: ``--iterations``, or ``--kimg`` (default 25000) in global batches."""
        if self.iterations is not None:
            return self.iterations
        return math.ceil((self.kimg if self.kimg is not None else 25000.0) * 1000 / self.batch)

    def snapshot_every(self) -> int:
        """Steps between checkpoints (``--snapshot-kimg`` in global batches, at least 1)."""
        return max(1, round(self.snapshot_kimg * 1000 / self.batch))

    def mbstd(self, world_size: int) -> int:
        """Minibatch-stddev group size: ``--mbstd-group`` capped at the per-process batch."""
        return min(self.mbstd_group, self.per_rank_batch(world_size))

    def generator_config(self) -> GeneratorConfig:
        """rosinality's generator widths at ``size``, capped at ``--fmap-max``."""
        base = GeneratorConfig.rosinality(self.size, self.style_dim, self.n_mlp, self.channel_multiplier)
        channels = {r: min(c, self.fmap_max) for r, c in base.channels.items()}
        return GeneratorConfig(self.size, self.style_dim, self.n_mlp, channels)

    def discriminator_config(self, world_size: int) -> DiscriminatorConfig:
        """rosinality's discriminator widths at ``size``, capped at ``--fmap-max``."""
        base = DiscriminatorConfig.rosinality(self.size, self.channel_multiplier)
        channels = {r: min(c, self.fmap_max) for r, c in base.channels.items()}
        return DiscriminatorConfig(self.size, channels, stddev_group=self.mbstd(world_size))

    def derived_run_id(self) -> str:
        """``--run-id``, or one derived from what makes a run *this* run.

        The same command started again (by a person after a crash, or by torchrun's elastic
        restart) derives the same id and resumes; a run with other data, size, architecture or
        batch into the same output derives another id and is refused.
        """
        if self.run_id:
            return self.run_id
        identity = {
            k: getattr(self, k)
            for k in (
                "data",
                "size",
                "batch",
                "style_dim",
                "n_mlp",
                "channel_multiplier",
                "fmap_max",
                "resume_from",
            )
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
        return f"stylegan{self.size}-{digest}"

    # ------------------------------------------------------------------ checks and conversions

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` on options that cannot work, before anything is read."""
        problems: list[str] = []
        if self.size < 4 or self.size & (self.size - 1) or self.size > 1024:
            problems.append(f"--size must be a power of two from 4 to 1024, got {self.size}")
        if self.batch < 1:
            problems.append(f"--batch must be >= 1, got {self.batch}")
        if self.kimg is not None and self.iterations is not None:
            problems.append("give --kimg or --iterations, not both")
        if self.kimg is not None and not self.kimg > 0:
            problems.append(f"--kimg must be > 0, got {self.kimg}")
        if self.iterations is not None and self.iterations < 1:
            problems.append(f"--iterations must be >= 1, got {self.iterations}")
        if self.gpus < 1:
            problems.append(f"--gpus must be >= 1, got {self.gpus}")
        lo, _, hi = self.nnodes.partition(":")
        if not (lo.isdigit() and int(lo) >= 1 and (not hi or (hi.isdigit() and int(hi) >= int(lo)))):
            problems.append(f"--nnodes must be N or MIN:MAX, got {self.nnodes!r}")
        elif (int(hi or lo) > 1) and not self.rdzv_endpoint:
            problems.append("--nnodes > 1 needs --rdzv-endpoint host:port (and --rdzv-id)")
        if self.max_restarts < 0:
            problems.append(f"--max-restarts must be >= 0, got {self.max_restarts}")
        if self.device not in DEVICES:
            problems.append(f"--device must be one of {DEVICES}, got {self.device!r}")
        if self.resume not in RESUME_MODES:
            problems.append(f"--resume must be one of {RESUME_MODES}, got {self.resume!r}")
        try:
            parse_augment(self.aug)
        except ValueError as exc:
            problems.append(str(exc))
        for name in ("r1_every", "path_every", "path_batch_shrink", "ada_every", "keep", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("style_dim", "n_mlp", "channel_multiplier", "fmap_max", "mbstd_group"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.mixing <= 1.0:
            problems.append(f"--mixing must be in [0, 1], got {self.mixing}")
        if not 0.0 < self.ada_target < 1.0:
            problems.append(f"--ada-target must be in (0, 1), got {self.ada_target}")
        for name in ("lr", "ada_kimg", "snapshot_kimg", "dist_timeout"):
            if not getattr(self, name) > 0:
                problems.append(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        for name in ("gamma", "ema_kimg"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.ema_rampup < 0 or self.path_weight < 0:
            problems.append("--ema-rampup and --path-weight must be >= 0")
        if self.grid < 0 or self.metric_images < 0 or self.workers < 0 or self.threads < 0:
            problems.append("--grid, --metric-images, --workers and --threads must be >= 0")
        if not problems and self.batch % self.world_min:
            problems.append(
                f"--batch {self.batch} is the global batch and must split evenly over "
                f"{self.world_min} processes"
            )
        if not problems and self.per_rank_batch(self.world_min) % self.mbstd(self.world_min):
            problems.append(
                f"the per-process batch {self.per_rank_batch(self.world_min)} is not a multiple of the "
                f"minibatch-stddev group {self.mbstd(self.world_min)}; change --batch or --mbstd-group"
            )
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types, with the derived values filled in (for logs, reporters, ``args``)."""
        out = asdict(self)
        out.update(
            gamma=self.resolved_gamma(),
            ema_kimg=self.resolved_ema_kimg(),
            total_iterations=self.total_iterations(),
            snapshot_every=self.snapshot_every(),
            run_id=self.derived_run_id(),
        )
        out.pop("store_url")  # may carry credentials
        return out

    def rosinality_args(self, world_size: int) -> dict[str, Any]:
        """``args`` for the checkpoint: rosinality ``train.py``'s names, then ours."""
        return {
            "size": self.size,
            "batch": self.per_rank_batch(world_size),
            "iter": self.total_iterations(),
            "r1": self.resolved_gamma(),
            "path_regularize": self.path_weight,
            "path_batch_shrink": self.path_batch_shrink,
            "d_reg_every": self.r1_every,
            "g_reg_every": self.path_every,
            "mixing": self.mixing,
            "lr": self.lr,
            "channel_multiplier": self.channel_multiplier,
            "latent": self.style_dim,
            "n_mlp": self.n_mlp,
            "augment": self.augment.mode != "none",
            "augment_p": self.augment.p,
            "ada_target": self.ada_target,
            "ada_length": self.ada_kimg * 1000,
            "ada_every": self.ada_every,
            "distributed": world_size > 1,
            "world_size": world_size,
            "ganfolk": self.as_dict(),
        }

    def to_argv(self) -> list[str]:
        """Command-line arguments that :func:`parse_config` turns back into this configuration."""
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if f.name in ("data", "out", "size"):
                argv += [flag, str(value)]
            elif isinstance(value, bool):
                argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
            elif value is not None and value != "":
                argv += [flag, str(value)]
        return argv


def _bool_flag(parser: argparse._ActionsContainer, name: str, help_text: str) -> None:
    parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help_text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``ganfolk train stylegan`` (and of the per-rank entry)."""
    d = TrainConfig("", "", 4)
    p.add_argument("--data", required=True, help="images: a folder, an LMDB or s3://bucket/prefix")
    p.add_argument("--out", required=True, help="checkpoints and grids: a folder or s3://bucket/prefix")
    p.add_argument("--size", type=int, required=True, help="resolution, a power of two")
    p.add_argument("--batch", type=int, default=d.batch, help="global batch over all processes")
    p.add_argument("--kimg", type=float, help="length in thousands of real images (default 25000)")
    p.add_argument("--iterations", type=int, help="length in steps (instead of --kimg)")
    r = add_launch_arguments(p, d)
    r.add_argument("--resume-from", default="", help="fine-tune from a rosinality training checkpoint")
    t = p.add_argument_group("training")
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--gamma", type=float, help="R1 weight (default 0.0002 * size^2 / batch)")
    t.add_argument("--r1-every", type=int, default=d.r1_every)
    t.add_argument("--path-weight", type=float, default=d.path_weight)
    t.add_argument("--path-every", type=int, default=d.path_every)
    t.add_argument("--path-batch-shrink", type=int, default=d.path_batch_shrink)
    t.add_argument("--mixing", type=float, default=d.mixing)
    t.add_argument("--ema-kimg", type=float, help="EMA half-life in kimg (default batch * 10 / 32)")
    t.add_argument("--ema-rampup", type=float, default=d.ema_rampup, help="0 disables the ramp-up")
    t.add_argument("--aug", default=d.aug, help="none, ada or fixed:P")
    t.add_argument("--ada-target", type=float, default=d.ada_target)
    t.add_argument("--ada-kimg", type=float, default=d.ada_kimg)
    t.add_argument("--ada-every", type=int, default=d.ada_every)
    t.add_argument("--xflip", action=argparse.BooleanOptionalAction, default=False)
    t.add_argument("--seed", type=int, default=d.seed)
    a = p.add_argument_group("architecture")
    a.add_argument("--style-dim", type=int, default=d.style_dim)
    a.add_argument("--n-mlp", type=int, default=d.n_mlp)
    a.add_argument("--channel-multiplier", type=int, default=d.channel_multiplier)
    a.add_argument("--fmap-max", type=int, default=d.fmap_max)
    a.add_argument("--mbstd-group", type=int, default=d.mbstd_group)
    f = p.add_argument_group("performance")
    _bool_flag(f, "amp", "bf16 autocast (default: on for CUDA)")
    _bool_flag(f, "channels-last", "channels_last memory format (default: on for CUDA)")
    f.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    f.add_argument("--workers", type=int, default=d.workers, help="data loader processes per rank")
    f.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="CPU threads per process for torch ops (default 0: OMP_NUM_THREADS, else all cores)",
    )
    o = p.add_argument_group("outputs")
    o.add_argument("--snapshot-kimg", type=float, default=d.snapshot_kimg)
    o.add_argument("--keep", type=int, default=d.keep, help="checkpoints kept")
    o.add_argument("--grid", type=int, default=d.grid, help="images in the snapshot grid")
    o.add_argument("--metric-images", type=int, default=d.metric_images, help="images per SWD/FID")
    o.add_argument("--log-every", type=int, default=d.log_every, help="steps between progress ticks")
    o.add_argument("--cache-dir", default=d.cache_dir, help=f"decoded dataset cache (${CACHE_ENV})")
    o.add_argument("--store-url", default=d.store_url, help=f"object store for s3:// (${STORE_ENV})")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A validated :class:`TrainConfig` from :func:`add_arguments`' namespace."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**values).validate()


def parse_config(argv: Sequence[str]) -> tuple[TrainConfig, bool]:
    """``(config, check)`` from command-line arguments (argparse exits on unknown options)."""
    parser = argparse.ArgumentParser(prog="python -m services.stylegan.training.run")
    add_arguments(parser)
    args = parser.parse_args(list(argv))
    return config_from_args(args), bool(args.check)
