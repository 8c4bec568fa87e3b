"""Process-group helpers: one process per GPU (``nccl``) or per CPU worker (``gloo``).

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous variables; without
them the process is a world of one and every helper here is a no-op, so the loop has one code
path.

Gradients are averaged with one flattened all-reduce per backward phase (:func:`average_gradients`)
rather than by wrapping the networks in ``DistributedDataParallel``: the lazy regularisers
differentiate D and G twice (``create_graph``), and some parameters take no part in a phase (D's
last bias in R1, G's last ``to_rgb`` in the path-length term), both of which DDP's reducer handles
badly. NVIDIA's StyleGAN3 trainer does the same; the arithmetic is DDP's (sum, then divide by the
world size), and a fixed parameter order keeps the ranks' buffers aligned.

BatchNorm layers (taming's PatchGAN discriminator) normalise with the statistics of the whole
global batch (:func:`sync_batchnorm`), so a run's arithmetic does not depend on how many processes
share the batch; ``nn.SyncBatchNorm`` would do the same but refuses CPU tensors (gloo).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_autograd
from torch import Tensor, nn

__all__ = [
    "DistEnv",
    "all_gather_cat",
    "all_reduce_mean",
    "average_gradients",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "init_distributed",
    "shutdown",
    "sync_batchnorm",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank, the world and the device it trains on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def _device(kind: str, local_rank: int) -> torch.device:
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but no CUDA device is visible to this process")
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(f"local rank {local_rank} has no GPU: only {count} visible on this node")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistEnv:
    """Join the process group torchrun described in the environment (or stay a world of one).

    The backend follows the device: ``nccl`` for CUDA, ``gloo`` for the CPU. ``timeout_s`` bounds
    every collective, so a rank that died mid-step fails the others instead of hanging them.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout_s),
            device_id=dev if dev.type == "cuda" else None,
        )
    return DistEnv(rank, local_rank, world, dev)


def shutdown() -> None:
    """Leave the process group (after a last barrier, so no rank tears down mid-collective)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank."""
    if _active():
        dist.barrier()


def average_gradients(params: list[nn.Parameter]) -> None:
    """Replace every ``.grad`` by its mean over the ranks, in one all-reduce.

    A parameter the phase left out gets a zero gradient, in a world of one too: that is what
    rosinality's ``0 * output`` terms give, so Adam treats it the same at any world size.
    """
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not _active():
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def all_reduce_mean(values: Tensor) -> Tensor:
    """The mean of ``values`` over the ranks (a new tensor; the input is left alone)."""
    out = values.detach().clone()
    if _active():
        dist.all_reduce(out)
        out /= dist.get_world_size()
    return out


def all_gather_cat(values: Tensor) -> Tensor:
    """Every rank's ``values`` (equal shapes) concatenated along dim 0, in rank order."""
    if not _active():
        return values.detach()
    parts = [torch.empty_like(values) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, values.detach().contiguous())
    return torch.cat(parts)


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module``."""
    if not _active():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` (picklable) on every rank."""
    if not _active():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0)
    result: T = box[0]
    return result


class SyncedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training-mode statistics span every rank's batch (equal batches per rank).

    The reductions are differentiable all-reduces, so the gradient flows through the global mean and
    variance as it would on one process holding the whole batch. Same parameters, buffers and state
    dict as ``BatchNorm2d``; on one process, or in eval mode, it is ``BatchNorm2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and _active()):
            return super().forward(x)
        count = x.numel() // x.shape[1] * dist.get_world_size()
        mean = dist_autograd.all_reduce(x.sum((0, 2, 3))) / count
        centred = x - mean.view(1, -1, 1, 1)
        var = dist_autograd.all_reduce(centred.pow(2).sum((0, 2, 3))) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                momentum = 0.1 if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / max(count - 1, 1), momentum)
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` inside ``module`` by a :class:`SyncedBatchNorm2d` with its state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = SyncedBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            ).to(child.weight.device if child.affine else torch.device("cpu"))
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            sync_batchnorm(child)
    return module
