"""Starting a VQGAN run: the checks before it, the launcher, and the per-rank entry.

:func:`plan` validates everything before any accelerator time: the options, the output (writable,
owned by this run), the taming yaml, the dataset (decoded into the node's cache, at least the
model's resolution, more images than one global batch besides the held-out ones), the checkpoint to
resume or ``--init`` to fine-tune from (its architecture must be the yaml's) and the LPIPS weights.
``python -m services.vqgan.training.run ...`` is what ``torchrun`` starts on every rank
(:func:`worker`); rank 0 re-plans and claims the output, and a restarted worker resumes from the
newest complete checkpoint by itself.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.storage import ObjectStore
from services.stylegan.training.data import DatasetError, DatasetInfo, check_dataset
from services.stylegan.training.report import make_reporter
from services.training import dist, launch
from services.training.output import CheckpointError, CheckpointRef, torch_load
from services.vqgan.model import VQGAN
from services.vqgan.training.checkpoints import (
    ModelSpec,
    VQOutput,
    check_state,
    fetch,
    open_vq_output,
    read_init,
    read_lpips,
    read_spec,
)
from services.vqgan.training.config import VQTrainConfig, parse_config
from services.vqgan.training.loop import RunStart, train
from services.vqgan.training.objective import VQLoss

__all__ = ["MODULE", "Plan", "launch_command", "main", "plan", "start", "worker"]

MODULE = "services.vqgan.training.run"
log = logging.getLogger("ganfolk.train")


@dataclass
class Plan:
    """What a run would do, validated: see :func:`plan`."""

    cfg: VQTrainConfig
    world_size: int
    spec: ModelSpec
    dataset: DatasetInfo
    output: VQOutput
    run_id: str
    resume: CheckpointRef | None
    store: ObjectStore | None
    init: dict[str, Tensor] | None = field(default=None, repr=False)

    @property
    def start_step(self) -> int:
        """The step the run starts at (0 unless resuming)."""
        return self.resume.iteration if self.resume is not None else 0

    def describe(self) -> str:
        """The resolved configuration and the decisions, for ``--check`` and logs."""
        cfg, m, lc = self.cfg, self.spec.model, self.spec.loss
        lr = self.spec.base_lr * cfg.batch * self.world_size
        if self.resume is not None:
            origin = f"resume     {self.resume.uri} at step {self.resume.iteration}"
        elif cfg.init:
            origin = f"fine-tune  from {cfg.init} (weights and LPIPS/discriminator, step 0)"
        else:
            origin = "start      from scratch (LPIPS from --lpips), step 0"
        return "\n".join(
            [
                f"run        {self.run_id}",
                f"model      {cfg.config}: {m.resolution} px, f{2 ** (len(m.ch_mult) - 1)}, "
                f"{m.n_embed} codes of {m.embed_dim}",
                f"data       {self.dataset.describe()}; {min(cfg.holdout, self.dataset.count)} held out",
                f"output     {self.output.location}",
                origin,
                f"processes  {self.world_size} ({cfg.gpus} per node x {cfg.nnodes} node(s)), "
                f"device {cfg.device}",
                f"batch      {cfg.batch} per process, {cfg.batch * self.world_size} global; lr {lr:.3g} "
                f"(= {self.spec.base_lr:g} x {cfg.batch} x {self.world_size})",
                f"length     {cfg.steps} steps; snapshot every {cfg.snapshot_every}, keep {cfg.keep}",
                f"loss       {lc.disc_loss}, disc_start {lc.disc_start}, disc_weight {lc.disc_weight:g}, "
                f"perceptual {lc.perceptual_weight:g}, codebook {lc.codebook_weight:g}",
            ]
        )


def _check_data(cfg: VQTrainConfig, spec: ModelSpec, world: int, store: ObjectStore | None) -> DatasetInfo:
    size = spec.model.resolution
    info = check_dataset(cfg.data, size, cfg.batch, cfg.cache_dir, world_size=world, store=store)
    if info.smaller:
        shown = ", ".join(info.smaller[:5]) + (" ..." if len(info.smaller) > 5 else "")
        raise DatasetError(
            f"{len(info.smaller)} of {info.count} images in {info.source} are smaller than the model's "
            f"{size} px resolution ({shown}); the VQGAN would learn upscaling blur: remove them or "
            "prepare the set at that size"
        )
    train_count = info.count - min(cfg.holdout, info.count)
    if train_count < cfg.batch * world:
        raise DatasetError(
            f"{info.source} holds {info.count} images; with {min(cfg.holdout, info.count)} held out that "
            f"leaves {train_count}, fewer than one batch of {cfg.batch} on each of {world} process(es) "
            f"({cfg.batch * world}): add images, lower --batch or --holdout"
        )
    return info


def _starting_weights(cfg: VQTrainConfig, spec: ModelSpec, store: ObjectStore | None) -> dict[str, Tensor]:
    """``--init``'s weights (architecture checked) completed with the LPIPS weights."""
    with torch.device("meta"):
        model, loss = VQGAN(spec.model), VQLoss(spec.loss)
    state: dict[str, Tensor] = {}
    if cfg.init:
        with fetch(cfg.init, store, "--init checkpoint") as path:
            state = read_init(path, cfg.init, cfg.init_sha256)
        check_state(model, state, f"--init {cfg.init}")
        disc = {k[5:]: v for k, v in state.items() if k.startswith("loss.discriminator.")}
        if disc:
            check_state(loss, disc, f"--init {cfg.init} (loss.discriminator.*)", ("discriminator.",))
    sources = []
    for source in cfg.lpips:
        with fetch(source, store, "--lpips file") as path:
            sources.append((source, torch_load(path, source, "cpu")))
    lpips = read_lpips(state or None, sources)
    state = {k: v for k, v in state.items() if not k.startswith("loss.perceptual_loss.")}
    state.update({f"loss.perceptual_loss.{k}": v for k, v in lpips.items()})
    return state


def _store(cfg: VQTrainConfig) -> ObjectStore | None:
    return launch.open_run_store(cfg.store_url, (cfg.data, cfg.out, cfg.init, cfg.config, *cfg.lpips))


def plan(cfg: VQTrainConfig, world_size: int | None = None, *, load_weights: bool = True) -> Plan:
    """Check that ``cfg`` can train, without touching an accelerator; raise a clear error if not."""
    cfg.validate()
    world = world_size or cfg.world_min
    store = _store(cfg)
    with fetch(cfg.config, store, "--config yaml") as path:
        spec = read_spec(path, cfg.config, cfg.disc_start, cfg.base_lr)
    try:
        output = open_vq_output(cfg.out, store)
    except OSError as exc:
        raise CheckpointError(f"the output {cfg.out} cannot be opened: {exc}") from None
    output.check_writable()
    dataset = _check_data(cfg, spec, world, store)
    run_id = cfg.derived_run_id()
    owner = (output.run() or {}).get("run_id")
    refs = output.checkpoints()
    resume, init = None, None
    if refs:
        if cfg.resume == "none":
            raise CheckpointError(
                f"{output.location} already holds checkpoints ({refs[-1].key}); --resume none refuses them"
            )
        if cfg.resume == "auto" and owner != run_id:
            raise CheckpointError(
                f"{output.location} holds the checkpoints of run {owner!r}, not of this run {run_id!r}; "
                "choose another output, or continue that run with --resume latest"
            )
        resume = refs[-1]
        run_id = str(owner or run_id)
        ckpt = output.load(resume)
        with torch.device("meta"):
            # taming's VQModel: the model's modules with the loss networks under ``loss``.
            full = VQGAN(spec.model)
            full.loss = VQLoss(spec.loss)
        check_state(full, ckpt["state_dict"], resume.uri)
        del ckpt
    else:
        if owner is not None and owner != run_id and cfg.resume != "latest":
            raise CheckpointError(
                f"{output.location} belongs to run {owner!r}, not to this run {run_id!r}; choose another "
                "output or give --run-id " + str(owner)
            )
        init = _starting_weights(cfg, spec, store)
    return Plan(cfg, world, spec, dataset, output, run_id, resume, store, init if load_weights else None)


def launch_command(cfg: VQTrainConfig) -> list[str]:
    """The ``torchrun`` command that starts :func:`worker` on every process of this node."""
    return launch.launch_command(cfg, MODULE)


def start(cfg: VQTrainConfig) -> int:
    """Run ``cfg``: in this process for one process, else by replacing this process with torchrun."""
    return launch.start(cfg, MODULE, worker)


def worker(cfg: VQTrainConfig) -> int:
    """One rank of a run; returns the exit status."""
    env = dist.init_distributed(cfg.device, cfg.dist_timeout)
    launch.setup_logging(env.rank)
    decision: RunStart | str | None = None
    p = None
    if env.is_main:
        try:
            p = plan(cfg, env.world_size)
            run_id = p.output.claim(
                p.run_id,
                resume=p.resume is not None,
                start_iteration=p.start_step,
                info={"config": cfg.as_dict(), "world_size": env.world_size},
            )
            decision = RunStart(
                run_id, str(p.dataset.cache), p.spec, p.resume.key if p.resume else None, p.start_step
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
    init = p.init if p is not None else None

    def body() -> None:
        output = open_vq_output(cfg.out, _store(cfg))
        output.run_id = begin.run_id
        train(cfg, env, begin, output, reporter, init=init)

    return launch.run_reported(reporter, body)


def main(argv: Sequence[str] | None = None) -> int:
    """The per-rank entry torchrun launches; ``--check`` prints the plan instead of training."""
    try:
        cfg, check = parse_config(sys.argv[1:] if argv is None else argv)
        if check:
            print(plan(cfg, load_weights=False).describe())
            return 0
    except InvalidArgument as exc:
        print(f"ganfolk train: {exc}", file=sys.stderr)
        return 2
    return worker(cfg)


if __name__ == "__main__":
    sys.exit(main())
