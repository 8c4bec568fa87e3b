"""StyleGAN2-ADA training throughput: prints figures, asserts nothing.

CPU: images/s of 2 gloo processes divided by 1 process at the same per-process batch (one thread
per process), i.e. the data-parallel scaling on this machine. GPU (when CUDA is visible): sec/kimg
at 256 and 512 px with every combination of bf16 autocast, channels_last and torch.compile.
Both: one modulated conv's forward+backward with per-sample weights in a grouped conv (fused,
rosinality's and the service's eval path) against activations scaled around one shared conv
(training's path), at the layer shapes of a 512 px generator.

    .venv/bin/python bench/train_stylegan.py [--steps 6] [--cpu-size 32] [--gpu-sizes 256 512]
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.stylegan.model import ModulatedConv2d
from services.stylegan.training import dist, loop
from services.stylegan.training.config import TrainConfig


def _config(size: int, batch: int, device: str, **kw: Any) -> TrainConfig:
    return TrainConfig("-", "-", size, batch=batch, device=device, workers=0, **kw).validate()


def _timed_steps(trainer: loop.Trainer, steps: int, warmup: int) -> float:
    """Seconds per step over ``steps`` after ``warmup`` (full steps, every lazy phase included)."""
    real = torch.rand(trainer.batch, 3, trainer.g.size, trainer.g.size, device=trainer.device) * 2 - 1
    for i in range(warmup):
        trainer.step(i, real)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        trainer.step(i, real)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def _cpu_rank(rank: int, world: int, port: int, size: int, per_rank: int, steps: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    env = dist.init_distributed("cpu", timeout_s=600)
    cfg = _config(size, per_rank * world, "cpu", fmap_max=64, style_dim=64, n_mlp=2, aug="ada")
    sec = _timed_steps(loop.Trainer(cfg, env), steps, warmup=2)
    if rank == 0:
        Path(out).write_text(str(per_rank * world / sec))
    dist.shutdown()


def cpu_scaling(size: int, per_rank: int, steps: int) -> None:
    # Two processes can only scale to 2x on two idle cores: the load says how idle they were.
    print(f"cpu {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    rates = {}
    for world in (1, 2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "rate")
            mp.spawn(_cpu_rank, args=(world, port, size, per_rank, steps, out), nprocs=world, join=True)
            rates[world] = float(Path(out).read_text())
        print(
            f"cpu {size}px, {world} process(es) x batch {per_rank}: {rates[world]:.2f} images/s", flush=True
        )
    print(
        f"cpu scaling 2 processes / 1 process: {rates[2] / rates[1]:.2f}x (ideal 2.00x); "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )


def gpu_table(sizes: list[int], batch: int, steps: int) -> None:
    env = dist.DistEnv(0, 0, 1, torch.device("cuda", 0))
    print(f"gpu {torch.cuda.get_device_name(0)}, batch {batch}, {steps} timed steps")
    print(f"{'size':>5} {'bf16':>5} {'chlast':>6} {'compile':>7} {'sec/kimg':>9} {'img/s':>8} {'GiB':>6}")
    for size, amp, cl, comp in itertools.product(sizes, (False, True), (False, True), (False, True)):
        torch.cuda.reset_peak_memory_stats()
        cfg = _config(size, batch, "cuda", amp=amp, channels_last=cl, compile=comp)
        try:
            sec = _timed_steps(loop.Trainer(cfg, env), steps, warmup=3 if comp else 2)
        except Exception as exc:  # a failed combination is a result too
            print(f"{size:>5} {amp!s:>5} {cl!s:>6} {comp!s:>7} failed: {type(exc).__name__}: {exc}")
            continue
        mem = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"{size:>5} {amp!s:>5} {cl!s:>6} {comp!s:>7} {sec * 1000 / batch:9.2f} {batch / sec:8.1f} {mem:6.1f}",
            flush=True,
        )


def modconv(device: torch.device, batch: int, reps: int) -> None:
    """Fused (grouped) vs shared-weight modulated conv, forward+backward, same inputs."""
    shapes = [(512, 16, True), (512, 32, False), (256, 64, True), (128, 128, False)]
    if device.type == "cpu":
        shapes = [(c // 4, r // 2, up) for c, r, up in shapes]  # a 2-core machine's share
    print(f"modconv on {device}, batch {batch}: fused ms / shared ms", flush=True)
    for ch, res, up in shapes:
        layer = ModulatedConv2d(ch, ch, 3, 512, upsample=up).to(device)
        x = torch.randn(batch, ch, res, res, device=device, requires_grad=True)
        style = torch.randn(batch, 512, device=device)
        ms = {}
        for fused in (True, False):
            layer.fused = fused
            for i in range(reps + 2):
                if i == 2:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                layer(x, style).square().mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            ms[fused] = (time.perf_counter() - start) * 1000 / reps
        kind = "up " if up else ""
        print(
            f"  {kind}{ch}ch {res}px: {ms[True]:8.2f} / {ms[False]:8.2f} = {ms[True] / ms[False]:.2f}x",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--cpu-size", type=int, default=32)
    parser.add_argument("--cpu-batch", type=int, default=4, help="per process")
    parser.add_argument("--gpu-sizes", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--gpu-batch", type=int, default=32)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    if not args.skip_cpu:
        cpu_scaling(args.cpu_size, args.cpu_batch, args.steps)
        torch.set_num_threads(1)
        modconv(torch.device("cpu"), 8, args.steps)
    if torch.cuda.is_available():
        modconv(torch.device("cuda", 0), args.gpu_batch, args.steps)
        gpu_table(args.gpu_sizes, args.gpu_batch, args.steps)
    else:
        print("no CUDA device: GPU sec/kimg not measured")


if __name__ == "__main__":
    main()
