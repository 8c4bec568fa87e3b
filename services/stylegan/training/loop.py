"""The StyleGAN2-ADA training loop, in plain PyTorch, on one process or many.

One step (:meth:`Trainer.step`) follows rosinality's ``train.py``:

1. D: ``softplus(D(aug(G(z)))) + softplus(-D(aug(x)))``; ADA's sign statistic of ``D(aug(x))`` is
   gathered from every rank before the controller adjusts ``p``;
2. every ``r1_every`` steps, D again on ``gamma / 2 * R1 * r1_every`` (lazy R1; the gradient is taken
   w.r.t. the un-augmented reals, as both references do);
3. G: ``softplus(-D(aug(G(z))))`` with style mixing;
4. every ``path_every`` steps, G again on ``path_weight * path_every * path penalty`` over
   ``batch / path_batch_shrink`` samples, the running mean path length averaged over the ranks;
5. the EMA generator moves toward G with ADA's half-life in images (and its ramp-up).

Each of the four backward phases ends with one all-reduce of the gradients
(:func:`~services.stylegan.training.dist.average_gradients`), then its optimiser step. Adam's
learning rate and betas carry the lazy-regularisation correction ``c = every / (every + 1)``.
The regularisers run in float32; the main passes use bf16 autocast when ``--amp``.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ganfolk.runtime.images import encode_png
from ganfolk.runtime.storage import ObjectNotFound
from services.stylegan.latents import z_batch
from services.stylegan.model import (
    DiscriminatorConfig,
    GeneratorConfig,
    build_discriminator,
    build_generator,
)
from services.stylegan.training import dist
from services.stylegan.training.augment import build_augment
from services.stylegan.training.checkpoints import CheckpointOutput, CheckpointRef, load_training_checkpoint
from services.stylegan.training.config import TrainConfig
from services.stylegan.training.data import ImageDataset, batches, make_loader
from services.stylegan.training.losses import (
    d_logistic_loss,
    d_r1_loss,
    g_nonsaturating_loss,
    g_path_regularize,
)
from services.stylegan.training.metrics import (
    extract_features,
    fid,
    inception_from_env,
    kid,
    pyramid_descriptors,
    swd,
    swd_min_resolution,
)
from services.stylegan.training.report import Reporter

__all__ = ["Trainer", "ema_beta", "make_grid", "train"]

log = logging.getLogger("ganfolk.train")


def ema_beta(batch: int, cur_nimg: int, ema_kimg: float, rampup: float) -> float:
    """ADA's EMA decay per step: half-life ``ema_kimg`` thousand images, at most ``rampup`` x seen."""
    ema_nimg = ema_kimg * 1000
    if rampup > 0:
        ema_nimg = min(ema_nimg, cur_nimg * rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


def _adam(params: Iterator[nn.Parameter], lr: float, every: int) -> torch.optim.Adam:
    # Lazy regularisation takes 1 extra step per `every`: scale lr and the betas to match.
    c = every / (every + 1)
    return torch.optim.Adam(params, lr=lr * c, betas=(0.0**c, 0.99**c))


def make_grid(images: Tensor) -> np.ndarray:
    """Images (N, 3, H, W) in [-1, 1] tiled into a near-square uint8 (rows*H, cols*W, 3) array."""
    n, _, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    grid = torch.zeros(rows * h, cols * w, 3, dtype=torch.uint8)
    for i, img in enumerate(pixels.cpu()):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return grid.numpy()


class Trainer:
    """G, D, G_ema, their optimisers and ADA on one rank; :meth:`step` trains on one batch."""

    def __init__(
        self,
        cfg: TrainConfig,
        env: dist.DistEnv,
        g_config: GeneratorConfig | None = None,
        d_config: DiscriminatorConfig | None = None,
    ) -> None:
        self.cfg, self.env, self.device = cfg, env, env.device
        cuda = self.device.type == "cuda"
        self.amp = cfg.amp if cfg.amp is not None else cuda
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else cuda
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.batch = cfg.per_rank_batch(env.world_size)
        self.global_batch = self.batch * env.world_size
        self.gamma = cfg.resolved_gamma()
        # Same seed on every rank: the networks start identical (and are broadcast anyway).
        torch.manual_seed(cfg.seed)
        self.g = build_generator(g_config or cfg.generator_config(), self.device)
        self.d = build_discriminator(d_config or cfg.discriminator_config(env.world_size), self.device)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        for net in (self.g, self.d, self.g_ema):
            net.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.g_params = list(self.g.parameters())
        self.d_params = list(self.d.parameters())
        self.g_optim = _adam(iter(self.g_params), cfg.lr, cfg.path_every)
        self.d_optim = _adam(iter(self.d_params), cfg.lr, cfg.r1_every)
        self.augment, self.ada = build_augment(
            cfg.augment, target=cfg.ada_target, kimg=cfg.ada_kimg, interval=cfg.ada_every
        )
        self.augment.to(self.device)
        self.mean_path_length = torch.zeros((), device=self.device)
        # Tests compare ranks with fixed noise maps; training always draws fresh noise.
        self.randomize_noise = True
        # Compiled forwards serve the main passes only: torch.compile cannot double-backward.
        self.g_main: Any = torch.compile(self.g) if cfg.compile else self.g
        self.d_main: Any = torch.compile(self.d) if cfg.compile else self.d
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

    # ------------------------------------------------------------------ state

    @property
    def ada_p(self) -> float:
        """The current augmentation probability."""
        return self.augment.p

    def load(self, ckpt: dict[str, Any], *, optimisers: bool) -> None:
        """Networks (and, resuming a run, optimisers, ADA p and path mean) from a training checkpoint."""
        self.g.load_state_dict(ckpt["g"])
        self.d.load_state_dict(ckpt["d"])
        self.g_ema.load_state_dict(ckpt["g_ema"])
        if not optimisers:
            return
        self.g_optim.load_state_dict(ckpt["g_optim"])
        self.d_optim.load_state_dict(ckpt["d_optim"])
        p = float(ckpt.get("ada_aug_p", 0.0))
        if self.ada is not None:
            self.ada.load_state_dict({**ckpt.get("ada", {}), "p": p})
            self.augment.p = p
        if "mean_path_length" in ckpt:
            self.mean_path_length.fill_(float(ckpt["mean_path_length"]))

    def broadcast(self) -> None:
        """Make every rank hold rank 0's networks (optimiser states follow from equal gradients)."""
        for net in (self.g, self.d, self.g_ema):
            dist.broadcast_module(net)

    def checkpoint(self, args: dict[str, Any], iteration: int) -> dict[str, Any]:
        """rosinality's training checkpoint, plus the ADA controller and the mean path length."""
        return {
            "g": self.g.state_dict(),
            "d": self.d.state_dict(),
            "g_ema": self.g_ema.state_dict(),
            "g_optim": self.g_optim.state_dict(),
            "d_optim": self.d_optim.state_dict(),
            "args": args,
            "ada_aug_p": self.ada_p,
            "ada": self.ada.state_dict() if self.ada is not None else {"p": self.ada_p},
            "mean_path_length": float(self.mean_path_length),
            "iteration": iteration,
        }

    # ------------------------------------------------------------------ pieces of a step

    def sample_z(self, n: int) -> list[Tensor]:
        """One latent batch, or two (style mixing) with probability ``--mixing``."""
        count = 2 if self.cfg.mixing > 0 and random.random() < self.cfg.mixing else 1
        return [torch.randn(n, self.g.style_dim, device=self.device) for _ in range(count)]

    def _autocast(self, enabled: bool = True) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp and enabled)

    def _generate(
        self, g: Any, z: list[Tensor], return_latents: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        img, latents = g(z, return_latents=return_latents, randomize_noise=self.randomize_noise)
        return img.contiguous(memory_format=self.memory_format), latents

    def _d(self, d: Any, images: Tensor) -> Tensor:
        out: Tensor = d(self.augment(images))
        return out.float()

    def _record(self, **values: Tensor) -> None:
        for name, value in values.items():
            v = value.detach().float()
            self._sums[name] = self._sums[name] + v if name in self._sums else v
            self._counts[name] = self._counts.get(name, 0) + 1

    def d_backward(self, real: Tensor, z: list[Tensor]) -> Tensor:
        """D's logistic loss on ``real`` and G(``z``), backpropagated and averaged over ranks."""
        self.g.requires_grad_(False)
        self.d.requires_grad_(True)
        self.d_optim.zero_grad(set_to_none=True)
        with self._autocast():
            with torch.no_grad():
                fake, _ = self._generate(self.g_main, z)
            fake_pred = self._d(self.d_main, fake)
            real_pred = self._d(self.d_main, real)
            loss = d_logistic_loss(real_pred, fake_pred)
        loss.backward()
        dist.average_gradients(self.d_params)
        self._record(loss_d=loss, real_score=real_pred.mean(), fake_score=fake_pred.mean())
        return real_pred

    def r1_backward(self, real: Tensor) -> Tensor:
        """Lazy R1: ``gamma / 2 * R1 * r1_every`` on D, backpropagated and averaged over ranks."""
        self.g.requires_grad_(False)
        self.d.requires_grad_(True)
        self.d_optim.zero_grad(set_to_none=True)
        real = real.detach().requires_grad_(True)
        pred = self._d(self.d, real)
        r1 = d_r1_loss(pred, real)
        (self.gamma / 2 * r1 * self.cfg.r1_every).backward()
        dist.average_gradients(self.d_params)
        self._record(r1=r1)
        return r1

    def g_backward(self, z: list[Tensor]) -> Tensor:
        """G's non-saturating loss on G(``z``), backpropagated and averaged over ranks."""
        self.g.requires_grad_(True)
        self.d.requires_grad_(False)
        self.g_optim.zero_grad(set_to_none=True)
        with self._autocast():
            fake, _ = self._generate(self.g_main, z)
            loss = g_nonsaturating_loss(self._d(self.d_main, fake))
        loss.backward()
        dist.average_gradients(self.g_params)
        self._record(loss_g=loss)
        return loss

    def path_backward(self, n: int) -> Tensor:
        """Lazy path-length regulariser on ``n`` samples; the running mean is averaged over ranks."""
        self.g.requires_grad_(True)
        self.d.requires_grad_(False)
        self.g_optim.zero_grad(set_to_none=True)
        fake, latents = self._generate(self.g, self.sample_z(n), return_latents=True)
        assert latents is not None
        penalty, new_mean, lengths = g_path_regularize(fake, latents, self.mean_path_length)
        (self.cfg.path_weight * self.cfg.path_every * penalty).backward()
        dist.average_gradients(self.g_params)
        self.mean_path_length = dist.all_reduce_mean(new_mean)
        self._record(path=penalty, path_length=lengths.mean())
        return penalty

    @torch.no_grad()
    def update_ema(self, cur_nimg: int) -> None:
        """Move G_ema toward G; buffers (the fixed noise maps) are copied."""
        beta = ema_beta(self.global_batch, cur_nimg, self.cfg.resolved_ema_kimg(), self.cfg.ema_rampup)
        for pe, p in zip(self.g_ema.parameters(), self.g.parameters(), strict=True):
            pe.lerp_(p, 1 - beta)
        for be, b in zip(self.g_ema.buffers(), self.g.buffers(), strict=True):
            be.copy_(b)

    def step(self, iteration: int, real: Tensor) -> None:
        """Train on one batch of reals (this rank's share); ``iteration`` picks the lazy phases."""
        real = real.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        real_pred = self.d_backward(real, self.sample_z(real.shape[0]))
        self.d_optim.step()
        if self.ada is not None:
            # Every rank feeds the same gathered logits, so every rank moves p the same way.
            self.augment.p = self.ada.update(dist.all_gather_cat(real_pred))
        if iteration % self.cfg.r1_every == 0:
            self.r1_backward(real)
            self.d_optim.step()
        self.g_backward(self.sample_z(real.shape[0]))
        self.g_optim.step()
        if iteration % self.cfg.path_every == 0 and self.cfg.path_weight > 0:
            self.path_backward(max(1, real.shape[0] // self.cfg.path_batch_shrink))
            self.g_optim.step()
        self.update_ema((iteration + 1) * self.global_batch)

    def take_stats(self) -> dict[str, float]:
        """Means since the last call over this tick's steps and all ranks (one all-reduce)."""
        names = sorted(self._sums)
        if not names:
            return {}
        means = dist.all_reduce_mean(torch.stack([self._sums[n] / self._counts[n] for n in names]))
        self._sums, self._counts = {}, {}
        return dict(zip(names, means.tolist(), strict=True))

    # ------------------------------------------------------------------ snapshots

    @torch.no_grad()
    def sample_ema(self, seeds: range) -> Tensor:
        """G_ema's images for fixed seeds (the same z whatever the batch), on the CPU."""
        out = []
        for start in range(seeds.start, seeds.stop, max(1, self.batch)):
            chunk = range(start, min(start + max(1, self.batch), seeds.stop))
            z = z_batch(chunk, self.g_ema.style_dim).to(self.device)
            with self._autocast():
                img, _ = self.g_ema([z], randomize_noise=False)
            out.append(img.float().cpu())
        return torch.cat(out) if out else torch.empty(0, 3, self.g.size, self.g.size)


@dataclass
class _Metrics:
    """Reference statistics of the reals, computed once per run on rank 0."""

    reals: Tensor
    swd_desc: Any = None
    inception: Any = None
    real_features: np.ndarray | None = None


def _grid_key(output: CheckpointOutput, iteration: int) -> str:
    return output.key(f"{iteration:06d}.png")


def _prune_grids(output: CheckpointOutput) -> None:
    """Grids of checkpoints that were pruned go too."""
    kept = [r.iteration for r in output.checkpoints()]
    if not kept:
        return
    start = output.key("")
    for info in output.store.list(start):
        m = re.fullmatch(r"(\d{6,})\.png", info.key[len(start) :])
        if m and int(m[1]) < min(kept):
            try:
                output.store.delete(info.key)
            except ObjectNotFound:
                pass


def _as_saved(images: Tensor) -> Tensor:
    """Images in [-1, 1] as their 8-bit PNGs hold them: clipped and quantised."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def _metrics(trainer: Trainer, ref: _Metrics, images: int) -> dict[str, float]:
    # Measured on the images a user gets, as ProGAN and StyleGAN measure theirs (uint8): raw G
    # output strays far outside [-1, 1] early on, and reals are 8-bit to begin with.
    fakes = _as_saved(trainer.sample_ema(range(1_000_000, 1_000_000 + images)))
    level = swd_min_resolution(trainer.g.size)
    result = swd(fakes, ref.swd_desc if ref.swd_desc is not None else ref.reals, min_resolution=level)
    out = {"swd": result.mean, **result.as_dict()}
    if ref.inception is not None and ref.real_features is not None:
        feats = extract_features(ref.inception, fakes.split(max(1, trainer.batch)))
        out["fid"] = fid(ref.real_features, feats)
        out["kid"] = kid(ref.real_features, feats)
    return out


def snapshot(
    trainer: Trainer,
    output: CheckpointOutput,
    iteration: int,
    args: dict[str, Any],
    ref: _Metrics | None,
) -> tuple[CheckpointRef, str, dict[str, float]]:
    """Rank 0: store the checkpoint, then the grid PNG beside it, then compute the metrics."""
    cfg = trainer.cfg
    saved = output.save(iteration, trainer.checkpoint(args, iteration), keep=cfg.keep)
    grid_uri = ""
    if cfg.grid > 0:
        key = _grid_key(output, iteration)
        output.store.put(key, encode_png(make_grid(trainer.sample_ema(range(cfg.grid)))), "image/png")
        grid_uri = output.store.uri(key)
        _prune_grids(output)
    metrics = _metrics(trainer, ref, cfg.metric_images) if ref is not None else {}
    return saved, grid_uri, metrics


def _reference(trainer: Trainer, dataset: ImageDataset) -> _Metrics | None:
    n = min(trainer.cfg.metric_images, len(dataset))
    if n == 0 or dataset.size < 8:  # SWD's 7x7 neighbourhoods need 8 px
        return None
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(trainer.cfg.seed))[:n]
    reals = torch.stack([dataset[int(i)] for i in order])
    ref = _Metrics(reals)
    # The reals' descriptors are drawn once (swd()'s own seed 0): every snapshot compares against them.
    ref.swd_desc = pyramid_descriptors(
        reals, generator=torch.Generator().manual_seed(0), min_resolution=swd_min_resolution(dataset.size)
    )
    ref.inception = inception_from_env(trainer.device)
    if ref.inception is not None:
        ref.real_features = extract_features(ref.inception, reals.split(max(1, trainer.batch)))
    return ref


# ---------------------------------------------------------------------- the run


@dataclass
class RunStart:
    """What rank 0 decided before training, shared with every rank."""

    run_id: str
    cache: str
    resume_key: str | None  # a checkpoint of this output to continue
    resume_iteration: int
    resume_from: str  # a checkpoint to fine-tune from (networks only)


def train(
    cfg: TrainConfig,
    env: dist.DistEnv,
    start: RunStart,
    output: CheckpointOutput,
    reporter: Reporter | None,
    *,
    store: Any = None,
) -> Trainer:
    """Train from ``start`` to ``cfg.total_iterations()``; rank 0 saves and reports."""
    ckpt: dict[str, Any] | None = None
    resuming = start.resume_key is not None
    if start.resume_key is not None:
        ref = next(r for r in output.checkpoints() if r.key == start.resume_key)
        ckpt = output.load(ref, cfg.size, map_location=env.device)
    elif start.resume_from:
        ckpt = load_training_checkpoint(start.resume_from, cfg.size, store=store, map_location=env.device)
    g_config = d_config = None
    if ckpt is not None:
        # The networks' shapes come from the file: a fine-tuned checkpoint defines the architecture.
        g_config = GeneratorConfig.from_state_dict(ckpt["g"])
        d_config = DiscriminatorConfig.from_state_dict(ckpt["d"], stddev_group=cfg.mbstd(env.world_size))
    trainer = Trainer(cfg, env, g_config, d_config)
    if ckpt is not None:
        trainer.load(ckpt, optimisers=resuming)
        del ckpt
    trainer.broadcast()
    first = start.resume_iteration if resuming else 0
    total = cfg.total_iterations()
    # Each rank draws its own latents, mixing and augmentations; resuming draws afresh.
    seed = cfg.seed * 1_000_003 + env.rank * 7919 + first
    torch.manual_seed(seed)
    random.seed(seed)

    dataset = ImageDataset(start.cache, xflip=cfg.xflip)
    loader = make_loader(
        dataset,
        trainer.batch,
        rank=env.rank,
        world_size=env.world_size,
        seed=cfg.seed + first,
        workers=cfg.workers,
    )
    data = batches(loader)
    reference = _reference(trainer, dataset) if env.is_main and cfg.metric_images > 0 else None
    args = cfg.rosinality_args(env.world_size)
    every = cfg.snapshot_every()
    if env.is_main and reporter is not None:
        reporter.started(
            start.run_id,
            {**cfg.as_dict(), "world_size": env.world_size, "start_iter": first, "run_id": start.run_id},
        )
        if resuming:
            log.info("resuming %s at iteration %d (ada p %.4f)", start.resume_key, first, trainer.ada_p)
    tick_start, tick_iter = time.monotonic(), first
    for iteration in range(first, total):
        trainer.step(iteration, next(data))
        done = iteration + 1
        if done % cfg.log_every == 0 or done == total:
            stats = trainer.take_stats()
            now = time.monotonic()
            kimg_done = (done - tick_iter) * trainer.global_batch / 1000
            stats.update(
                iteration=float(done),
                kimg=done * trainer.global_batch / 1000,
                total_kimg=total * trainer.global_batch / 1000,
                sec_per_kimg=(now - tick_start) / max(kimg_done, 1e-9),
                sec_per_iter=(now - tick_start) / max(done - tick_iter, 1),
                ada_p=trainer.ada_p,
            )
            if trainer.ada is not None and trainer.ada.rt is not None:
                stats["ada_sign"] = trainer.ada.rt
            if env.device.type == "cuda":
                stats["mem_gib"] = torch.cuda.max_memory_allocated(env.device) / 2**30
            if env.is_main and reporter is not None:
                reporter.tick(stats)
            tick_start, tick_iter = now, done
        if done % every == 0 or done == total:
            if env.is_main:
                saved, grid_uri, metrics = snapshot(trainer, output, done, args, reference)
                if reporter is not None:
                    reporter.snapshot(done, saved.uri, saved.sha256, grid_uri, metrics)
            dist.barrier()
    return trainer
