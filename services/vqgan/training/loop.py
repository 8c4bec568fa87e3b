"""The VQGAN fine-tuning loop, in plain PyTorch, on one process or many.

One step (:meth:`Trainer.step`) is taming's ``VQModel.training_step`` for its two optimisers:

1. autoencoder: reconstruct, then taming's objective (:mod:`.objective`) with the adaptive weight
   taken at ``decoder.conv_out.weight``. The two last-layer gradients come from one backward
   through LPIPS and one through D to the reconstruction, then only through the last conv; the full
   backward reuses them, so LPIPS and D are differentiated once each, where taming does it twice.
   Across ranks the last-layer gradients are averaged before their norms, so the weight is that of
   the global batch;
2. discriminator: ``disc_factor * hinge(D(x), D(x̂))`` on the same reconstructions. Before
   ``disc_start`` D is neither run nor differentiated (taming multiplies its terms by 0), but its
   Adam still steps on zero gradients so its step count -- and bias correction -- match taming's.

Each phase ends with one all-reduce of its gradients, as the StyleGAN2 loop does; BatchNorm in D
uses the statistics of the global batch (:func:`services.training.dist.sync_batchnorm`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Subset

from ganfolk.runtime.images import encode_png
from services.stylegan.training.data import ImageDataset, batches, make_loader
from services.stylegan.training.report import Reporter
from services.training import dist
from services.training.output import CheckpointRef
from services.vqgan.model import VQGAN
from services.vqgan.training.checkpoints import ModelSpec, VQOutput
from services.vqgan.training.config import VQTrainConfig
from services.vqgan.training.objective import VQLoss, adaptive_weight

__all__ = ["RunStart", "Trainer", "evaluate", "pair_grid", "split", "train"]

log = logging.getLogger("ganfolk.train")


class Trainer:
    """The VQGAN, its loss networks and the two Adam optimisers on one rank."""

    def __init__(self, cfg: VQTrainConfig, env: dist.DistEnv, spec: ModelSpec) -> None:
        self.cfg, self.env, self.spec, self.device = cfg, env, spec, env.device
        self.amp = cfg.amp if cfg.amp is not None else env.device.type == "cuda"
        torch.manual_seed(cfg.seed)
        self.model = VQGAN(spec.model).to(self.device)
        self.loss = VQLoss(spec.loss).to(self.device)
        dist.sync_batchnorm(self.loss.discriminator)
        self.lr = spec.base_lr * cfg.batch * env.world_size
        # taming's opt_ae covers encoder, decoder, quantize, quant_conv and post_quant_conv: the model.
        self.ae_params = list(self.model.parameters())
        self.d_params = list(self.loss.discriminator.parameters())
        self.ae_optim = torch.optim.Adam(self.ae_params, lr=self.lr, betas=(0.5, 0.9))
        self.d_optim = torch.optim.Adam(self.d_params, lr=self.lr, betas=(0.5, 0.9))
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Tensor]:
        """taming's ``VQModel`` state dict: the model's keys, then ``loss.*``."""
        sd = dict(self.model.state_dict())
        sd.update({f"loss.{k}": v for k, v in self.loss.state_dict().items()})
        return sd

    def load(self, sd: dict[str, Tensor], optimizer_states: list[Any] | None = None) -> None:
        """Weights (model + ``loss.*``) and, resuming, both optimisers' states."""
        self.model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("loss.")})
        loss = {k[5:]: v for k, v in sd.items() if k.startswith("loss.")}
        self.loss.perceptual_loss.load(
            {k[16:]: v for k, v in loss.items() if k.startswith("perceptual_loss.")}, ""
        )
        disc = {k[14:]: v for k, v in loss.items() if k.startswith("discriminator.")}
        if disc:
            self.loss.discriminator.load_state_dict(disc)
        if optimizer_states is not None:
            self.ae_optim.load_state_dict(optimizer_states[0])
            self.d_optim.load_state_dict(optimizer_states[1])

    def broadcast(self) -> None:
        """Every rank takes rank 0's weights (optimiser states stay equal through equal gradients)."""
        dist.broadcast_module(self.model)
        dist.broadcast_module(self.loss)
        self.loss.perceptual_loss.loaded = True

    def checkpoint(self, global_step: int, extra: dict[str, Any]) -> dict[str, Any]:
        """The Lightning-style checkpoint (see :mod:`.checkpoints`)."""
        return {
            "state_dict": self.state_dict(),
            "global_step": global_step,
            "optimizer_states": [self.ae_optim.state_dict(), self.d_optim.state_dict()],
            "ganfolk": extra,
        }

    # ------------------------------------------------------------------ a step

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _record(self, **values: Tensor | float) -> None:
        for name, value in values.items():
            v = value.detach().float() if isinstance(value, Tensor) else torch.tensor(float(value))
            self._sums[name] = (
                self._sums[name] + v.to(self.device) if name in self._sums else v.to(self.device)
            )
            self._counts[name] = self._counts.get(name, 0) + 1

    def ae_backward(self, x: Tensor, global_step: int) -> Tensor:
        """The autoencoder's gradients (averaged over ranks) for ``x``; returns the reconstruction."""
        lc = self.spec.loss
        self.model.train()
        self.loss.discriminator.train().requires_grad_(False)
        self.ae_optim.zero_grad(set_to_none=True)
        with self._autocast():
            xrec, qloss = self.model(x)
        xr = xrec.detach().float().requires_grad_(True)
        with self._autocast():
            nll, l1, p = self.loss.nll(x, xr)
        nll = nll.float()
        (grad,) = torch.autograd.grad(nll, xr)
        factor = self.loss.disc_factor(global_step)
        d_weight = torch.zeros((), device=self.device)
        g_loss = torch.zeros((), device=self.device)
        if factor > 0:
            with self._autocast():
                g_loss = self.loss.g_loss(xr).float()
            (g_grad,) = torch.autograd.grad(g_loss, xr)
            last = self.model.decoder.conv_out.weight
            parts = [
                torch.autograd.grad(xrec, last, g.to(xrec.dtype), retain_graph=True)[0].float().reshape(-1)
                for g in (grad, g_grad)
            ]
            both = dist.all_reduce_mean(torch.cat(parts))
            d_weight = adaptive_weight(both[: last.numel()], both[last.numel() :], lc.disc_weight)
            grad = grad + d_weight * factor * g_grad
        torch.autograd.backward((xrec, lc.codebook_weight * qloss.float()), (grad.to(xrec.dtype), None))
        dist.average_gradients(self.ae_params)
        total = nll.detach() + d_weight * factor * g_loss.detach() + lc.codebook_weight * qloss.detach()
        self._record(
            loss_g=total, nll=nll, rec_l1=l1, perceptual=p, codebook=qloss, g_adv=g_loss, d_weight=d_weight
        )
        return xr.detach()

    def d_backward(self, x: Tensor, xrec: Tensor, global_step: int) -> None:
        """The discriminator's gradients (zero before ``disc_start``), averaged over ranks."""
        self.d_optim.zero_grad(set_to_none=True)
        if self.loss.disc_factor(global_step) > 0:
            self.loss.discriminator.train().requires_grad_(True)
            with self._autocast():
                d_loss, real, fake = self.loss.d_loss(x, xrec, global_step)
            d_loss.float().backward()
            self._record(loss_d=d_loss, real_score=real, fake_score=fake)
        dist.average_gradients(self.d_params)

    def step(self, global_step: int, x: Tensor) -> None:
        """Train on one batch (this rank's share) at taming's ``global_step``."""
        x = x.to(self.device, non_blocking=True)
        xrec = self.ae_backward(x, global_step)
        self.ae_optim.step()
        self.d_backward(x, xrec, global_step)
        self.d_optim.step()

    def take_stats(self) -> dict[str, float]:
        """Means since the last call over this tick's steps and all ranks (one all-reduce)."""
        names = sorted(self._sums)
        if not names:
            return {}
        means = dist.all_reduce_mean(torch.stack([self._sums[n] / self._counts[n] for n in names]))
        self._sums, self._counts = {}, {}
        return dict(zip(names, means.tolist(), strict=True))


# ---------------------------------------------------------------------- held-out figures


@torch.no_grad()
def evaluate(model: VQGAN, images: Tensor, batch: int) -> tuple[dict[str, float], Tensor]:
    """PSNR (dB, images in [0, 1]) and codebook usage on ``images``; also the reconstructions (CPU).

    ``perplexity`` is ``exp`` of the entropy of the codes used, ``codebook_usage`` the share of the
    codebook used at least once.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    psnrs, recs = [], []
    counts = torch.zeros(model.config.n_embed, dtype=torch.float64)
    for chunk in images.split(max(1, batch)):
        x = chunk.to(device)
        quant, _, (_, _, idx) = model.encode(x)
        rec = model.decode(quant).float().clamp(-1, 1)
        mse = ((rec - x) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        psnrs.append((-10 * torch.log10(mse)).cpu())
        counts += torch.bincount(idx.cpu(), minlength=model.config.n_embed).double()
        recs.append(rec.cpu())
    model.train(was_training)
    prob = counts / counts.sum()
    entropy = -(prob[prob > 0] * prob[prob > 0].log()).sum()
    figures = {
        "psnr": float(torch.cat(psnrs).mean()),
        "perplexity": float(entropy.exp()),
        "codebook_usage": float((counts > 0).double().mean()),
    }
    return figures, torch.cat(recs)


def pair_grid(inputs: Tensor, recs: Tensor) -> np.ndarray:
    """``input | reconstruction`` pairs, two pairs a row, as a uint8 (rows*H, 4*W, 3) image."""
    n, _, h, w = inputs.shape
    per_row = 2 if n > 1 else 1
    rows = math.ceil(n / per_row)
    grid = torch.zeros(rows * h, per_row * 2 * w, 3, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, per_row)
        for j, img in enumerate((inputs[i], recs[i])):
            pixels = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
            grid[r * h : (r + 1) * h, (2 * c + j) * w : (2 * c + j + 1) * w] = pixels
    return grid.numpy()


def split(count: int, holdout: int, seed: int) -> tuple[list[int], list[int]]:
    """``(train, held-out)`` indices: a seeded permutation, its last ``holdout`` held out."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = count - min(holdout, count)
    return sorted(order[:cut]), sorted(order[cut:])


# ---------------------------------------------------------------------- the run


@dataclass
class RunStart:
    """What rank 0 decided before training, shared with every rank."""

    run_id: str
    cache: str
    spec: ModelSpec
    resume_key: str | None  # a checkpoint of this output to continue
    resume_step: int


def snapshot(
    trainer: Trainer, output: VQOutput, step: int, held: Tensor, extra: dict[str, Any]
) -> tuple[CheckpointRef, str, dict[str, float]]:
    """Rank 0: the checkpoint (with its yaml), then the held-out figures and the grid beside it."""
    cfg = trainer.cfg
    metrics: dict[str, float] = {}
    recs = None
    if len(held):
        metrics, recs = evaluate(trainer.model, held, cfg.batch)
    saved = output.save(
        step,
        trainer.checkpoint(step, {**extra, "metrics": metrics}),
        keep=cfg.keep,
        sidecars={".yaml": trainer.spec.yaml()},
    )
    grid_uri = ""
    if recs is not None and cfg.grid > 0:
        key = output.key(f"{step:06d}.png")
        output.store.put(key, encode_png(pair_grid(held[: cfg.grid], recs[: cfg.grid])), "image/png")
        grid_uri = output.store.uri(key)
        kept = min(r.iteration for r in output.checkpoints())
        for info in output.store.list(output.key("")):
            name = info.key.rsplit("/", 1)[-1]
            if name.endswith(".png") and name[:-4].isdigit() and int(name[:-4]) < kept:
                output.store.delete(info.key)
    return saved, grid_uri, metrics


def train(
    cfg: VQTrainConfig,
    env: dist.DistEnv,
    start: RunStart,
    output: VQOutput,
    reporter: Reporter | None,
    init: dict[str, Tensor] | None = None,
) -> Trainer:
    """Train from ``start`` to ``cfg.steps``; rank 0 saves and reports.

    ``init`` (rank 0 only) is the state dict to fine-tune from: the ``--init`` weights completed with
    the LPIPS ones. Resuming, every rank reads the checkpoint itself.
    """
    trainer = Trainer(cfg, env, start.spec)
    first = 0
    if start.resume_key is not None:
        ref = next(r for r in output.checkpoints() if r.key == start.resume_key)
        ckpt = output.load(ref, map_location=env.device)
        trainer.load(ckpt["state_dict"], ckpt["optimizer_states"])
        first = int(ckpt["global_step"])
        del ckpt
    elif init is not None:
        trainer.load(init)
    trainer.broadcast()
    if not trainer.loss.perceptual_loss.loaded and start.spec.loss.perceptual_weight > 0:
        raise RuntimeError(
            "LPIPS weights were not loaded; refusing to train with a random perceptual network"
        )

    dataset = ImageDataset(start.cache, xflip=cfg.xflip)
    train_idx, held_idx = split(len(dataset), cfg.holdout, cfg.seed)
    held = torch.stack([ImageDataset(start.cache)[i] for i in held_idx]) if env.is_main and held_idx else None
    loader = make_loader(
        Subset(dataset, train_idx),
        cfg.batch,
        rank=env.rank,
        world_size=env.world_size,
        seed=cfg.seed + first,
        workers=cfg.workers,
    )
    data = batches(loader)
    extra = {"config": cfg.as_dict(), "world_size": env.world_size, "lr": trainer.lr, "holdout": held_idx}
    global_batch = cfg.batch * env.world_size
    if env.is_main and reporter is not None:
        info = {**cfg.as_dict(), "size": start.spec.model.resolution, "world_size": env.world_size}
        reporter.started(start.run_id, {**info, "start_iter": first, "run_id": start.run_id})
        if first:
            log.info("resuming %s at step %d", start.resume_key, first)
    tick_start, tick_step = time.monotonic(), first
    for step in range(first, cfg.steps):
        trainer.step(step, next(data))
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            stats = trainer.take_stats()
            now = time.monotonic()
            images = (done - tick_step) * global_batch
            stats.update(
                iteration=float(done),
                kimg=done * global_batch / 1000,
                total_kimg=cfg.steps * global_batch / 1000,
                sec_per_kimg=(now - tick_start) / max(images / 1000, 1e-9),
                sec_per_iter=(now - tick_start) / max(done - tick_step, 1),
                images_per_sec=images / max(now - tick_start, 1e-9),
            )
            if env.device.type == "cuda":
                stats["mem_gib"] = torch.cuda.max_memory_allocated(env.device) / 2**30
            if env.is_main and reporter is not None:
                reporter.tick(stats)
            tick_start, tick_step = now, done
        if done % cfg.snapshot_every == 0 or done == cfg.steps:
            if env.is_main:
                saved, grid_uri, metrics = snapshot(
                    trainer, output, done, held if held is not None else torch.empty(0), extra
                )
                if reporter is not None:
                    reporter.snapshot(done, saved.uri, saved.sha256, grid_uri, metrics)
            dist.barrier()
    return trainer
