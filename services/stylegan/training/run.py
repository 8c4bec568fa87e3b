"""Starting a training run: the checks before it, the launcher, and the per-rank entry.

* :func:`plan` validates everything a run needs -- options, output writability and ownership,
  the dataset (decoded into the node's cache), the checkpoint to resume or fine-tune from -- and
  spends no accelerator time. ``--check`` prints it; the CLI runs it before launching, and rank 0
  runs it again at start (the output may have changed meanwhile).
* :func:`launch_command` is the ``torchrun`` command line for ``--gpus``/``--nnodes``;
  :func:`start` runs a one-process run in place and execs ``torchrun`` otherwise.
* ``python -m services.stylegan.training.run ...`` is what ``torchrun`` starts on every rank
  (:func:`worker`). Rank 0 re-plans and claims the output, every rank gets its decision, and a
  restarted worker (``--max-restarts``, or a person starting the same command after ``kill -9``)
  resumes from the newest complete checkpoint by itself.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.storage import ObjectStore
from services.stylegan.training import dist
from services.stylegan.training.checkpoints import (
    CheckpointError,
    CheckpointOutput,
    CheckpointRef,
    load_training_checkpoint,
    open_output,
)
from services.stylegan.training.config import TrainConfig, parse_config
from services.stylegan.training.data import DatasetInfo, check_dataset
from services.stylegan.training.loop import RunStart, train
from services.stylegan.training.report import make_reporter
from services.training import launch

__all__ = ["Plan", "launch_command", "main", "plan", "start", "worker"]

log = logging.getLogger("ganfolk.train")


@dataclass
class Plan:
    """What a run would do, validated: see :func:`plan`."""

    cfg: TrainConfig
    world_size: int
    dataset: DatasetInfo
    output: CheckpointOutput
    run_id: str
    resume: CheckpointRef | None
    store: ObjectStore | None

    @property
    def start_iteration(self) -> int:
        """The step the run starts at (0 unless resuming)."""
        return self.resume.iteration if self.resume is not None else 0

    def describe(self) -> str:
        """The resolved configuration and the decisions, for ``--check`` and logs."""
        cfg = self.cfg
        total = cfg.total_iterations()
        lines = [
            f"run        {self.run_id}",
            f"data       {self.dataset.describe()}",
            f"output     {self.output.location}",
        ]
        if self.resume is not None:
            lines.append(f"resume     {self.resume.uri} at iteration {self.resume.iteration}")
        elif cfg.resume_from:
            lines.append(f"fine-tune  from {cfg.resume_from} (networks only, iteration 0)")
        else:
            lines.append("start      fresh, iteration 0")
        lines += [
            f"processes  {self.world_size} ({cfg.gpus} per node x {cfg.nnodes} node(s)), device {cfg.device}",
            f"batch      {cfg.batch} global, {cfg.per_rank_batch(self.world_size)} per process",
            f"length     {total} iterations = {total * cfg.batch / 1000:g} kimg; "
            f"snapshot every {cfg.snapshot_every()} iterations, keep {cfg.keep}",
            f"losses     gamma {cfg.resolved_gamma():g} every {cfg.r1_every}, path {cfg.path_weight:g} "
            f"every {cfg.path_every}, mixing {cfg.mixing:g}, lr {cfg.lr:g}",
            f"ema        {cfg.resolved_ema_kimg():g} kimg half-life, ramp-up {cfg.ema_rampup:g}",
            f"augment    {cfg.aug} (target {cfg.ada_target:g}), xflip {cfg.xflip}",
        ]
        return "\n".join(lines)


def _store(cfg: TrainConfig) -> ObjectStore | None:
    return launch.open_run_store(cfg.store_url, (cfg.data, cfg.out, cfg.resume_from))


def plan(cfg: TrainConfig, world_size: int | None = None) -> Plan:
    """Check that ``cfg`` can train, without touching an accelerator; raise a clear error if not.

    ``world_size`` defaults to the smallest world the launch options allow.
    """
    cfg.validate()
    world = world_size or cfg.world_min
    per_rank = cfg.per_rank_batch(world)
    store = _store(cfg)
    try:
        output = open_output(cfg.out, store)
    except OSError as exc:
        raise CheckpointError(f"the output {cfg.out} cannot be opened: {exc}") from None
    output.check_writable()
    dataset = check_dataset(cfg.data, cfg.size, per_rank, cfg.cache_dir, world_size=world, store=store)
    run_id = cfg.derived_run_id()
    owner = (output.run() or {}).get("run_id")
    refs = output.checkpoints()
    resume = None
    if refs:
        if cfg.resume == "none":
            raise CheckpointError(
                f"{output.location} already holds checkpoints ({refs[-1].key}); --resume none refuses "
                "them: choose an empty output"
            )
        if cfg.resume == "auto" and owner != run_id:
            if owner is None:
                raise CheckpointError(
                    f"{output.location} holds checkpoints ({refs[-1].key}) of an unrecorded run; "
                    "continue them with --resume latest or choose an empty output"
                )
            raise CheckpointError(
                f"{output.location} holds the checkpoints of run {owner!r}, not of this run {run_id!r} "
                "(other data, size, batch or architecture, or another --run-id); choose another output, "
                "or continue that run with --resume latest"
            )
        resume = refs[-1]
        run_id = str(owner or run_id)
        output.load(resume, cfg.size)
    else:
        if owner is not None and owner != run_id and cfg.resume != "latest":
            raise CheckpointError(
                f"{output.location} belongs to run {owner!r}, not to this run {run_id!r}; choose another "
                "output or give --run-id " + str(owner)
            )
        if cfg.resume_from:
            load_training_checkpoint(cfg.resume_from, cfg.size, store=store)
    return Plan(cfg, world, dataset, output, run_id, resume, store)


MODULE = "services.stylegan.training.run"


def launch_command(cfg: TrainConfig) -> list[str]:
    """The ``torchrun`` command that starts :func:`worker` on every process of this node."""
    return launch.launch_command(cfg, MODULE)


def start(cfg: TrainConfig) -> int:
    """Run ``cfg``: in this process for one process, else by replacing this process with torchrun."""
    return launch.start(cfg, MODULE, worker)


def worker(cfg: TrainConfig) -> int:
    """One rank of a run (see the module docstring); returns the exit status."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _worker(cfg)
    finally:
        # An in-process run (one process, or a test) leaves the caller's thread count as it was.
        torch.set_num_threads(threads)


def _worker(cfg: TrainConfig) -> int:
    env = dist.init_distributed(cfg.device, cfg.dist_timeout)
    launch.setup_logging(env.rank)
    decision: RunStart | str | None = None
    if env.is_main:
        try:
            p = plan(cfg, env.world_size)
            run_id = p.output.claim(
                p.run_id,
                resume=p.resume is not None,
                start_iteration=p.start_iteration,
                info={"config": cfg.as_dict(), "world_size": env.world_size},
            )
            decision = RunStart(
                run_id,
                str(p.dataset.cache),
                p.resume.key if p.resume is not None else None,
                p.start_iteration,
                cfg.resume_from if p.resume is None else "",
            )
        except InvalidArgument as exc:
            decision = str(exc)
    # Every rank learns rank 0's verdict, so a bad option stops them all instead of hanging them.
    decision = dist.broadcast_object(decision)
    if isinstance(decision, str) or decision is None:
        if env.is_main:
            print(f"ganfolk train: {decision}", file=sys.stderr)
        launch.leave(clean=False)
        return 2
    reporter = make_reporter(cfg) if env.is_main else None
    begin: RunStart = decision  # narrowed above; closures do not keep narrowing

    def body() -> None:
        store = _store(cfg)
        output = open_output(cfg.out, store)
        output.run_id = begin.run_id
        train(cfg, env, begin, output, reporter, store=store)

    return launch.run_reported(reporter, body)


def main(argv: Sequence[str] | None = None) -> int:
    """The per-rank entry torchrun launches; ``--check`` prints the plan instead of training."""
    try:
        cfg, check = parse_config(sys.argv[1:] if argv is None else argv)
        if check:
            print(plan(cfg).describe())
            return 0
    except InvalidArgument as exc:
        print(f"ganfolk train: {exc}", file=sys.stderr)
        return 2
    return worker(cfg)


if __name__ == "__main__":
    sys.exit(main())
