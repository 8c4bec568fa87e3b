"""VQGAN fine-tuning speed: steps/s on the CPU for 1 vs 2 gloo processes (same per-process batch), and
on a GPU, when there is one, images/s at 256 px with and without bf16. Prints; never asserts.

    .venv/bin/python bench/train_vqgan.py [--steps 20] [--gpu-steps 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.training import dist  # noqa: E402
from services.vqgan.model import VQGANConfig  # noqa: E402
from services.vqgan.training.checkpoints import ModelSpec, read_spec  # noqa: E402
from services.vqgan.training.config import VQTrainConfig  # noqa: E402
from services.vqgan.training.loop import Trainer  # noqa: E402
from services.vqgan.training.objective import LossConfig  # noqa: E402

TINY = REPO / "tests" / "data" / "golden" / "vqgan_tiny.yaml"


def _random_lpips(t: Trainer) -> None:
    sd = t.loss.perceptual_loss.state_dict()
    t.loss.perceptual_loss.load(
        {k: v if k.startswith("scaling") else torch.randn_like(v) * 0.05 for k, v in sd.items()}, "bench"
    )


def _timed(t: Trainer, size: int, batch: int, steps: int, device: torch.device) -> float:
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    for i in range(3):  # warm-up, the discriminator on
        t.step(i, x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        t.step(3 + i, x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _cpu_rank(rank: int, world: int, port: int, steps: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    env = dist.init_distributed("cpu")
    cfg = VQTrainConfig("-", "-", str(TINY), batch=4, device="cpu")
    t = Trainer(cfg, env, read_spec(TINY, "bench", disc_start=0))
    _random_lpips(t)
    took = _timed(t, 32, 4, steps, env.device)
    if rank == 0:
        Path(out).write_text(str(steps / took))
    dist.shutdown()


def cpu(steps: int) -> None:
    rates = {}
    for world in (1, 2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "rate")
            mp.spawn(_cpu_rank, args=(world, port, steps, out), nprocs=world, join=True)
            rates[world] = float(Path(out).read_text())
        print(
            f"cpu  {world} process(es), batch 4 each, 32 px: {rates[world]:.2f} steps/s "
            f"({rates[world] * 4 * world:.1f} images/s)"
        )
    print(f"cpu  2 vs 1 process throughput (images/s): {2 * rates[2] / rates[1]:.2f}x (goal >= 1.7x)")


def gpu(steps: int) -> None:
    if not torch.cuda.is_available():
        print("gpu  none visible: skipped")
        return
    # The f16 architecture of GANfolk's VQGAN (taming's custom_vqgan.yaml) at 256 px, random weights.
    model = VQGANConfig(256, 1024, 128, (1, 1, 2, 2, 4), 2, (16,), 256, 256)
    spec = ModelSpec(model, LossConfig(disc_start=0, disc_weight=0.8), 4.5e-6)
    env = dist.DistEnv(0, 0, 1, torch.device("cuda", 0))
    for amp in (False, True):
        cfg = VQTrainConfig("-", "-", "-", batch=8, device="cuda", amp=amp)
        t = Trainer(cfg, env, spec)
        _random_lpips(t)
        took = _timed(t, 256, 8, steps, env.device)
        mem = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"gpu  {torch.cuda.get_device_name()}, 256 px, batch 8, bf16 {amp}: "
            f"{steps * 8 / took:.1f} images/s, {mem:.1f} GiB peak"
        )
        del t
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--gpu-steps", type=int, default=20)
    p.add_argument("--no-cpu", action="store_true")
    args = p.parse_args()
    if not args.no_cpu:
        cpu(args.steps)
    gpu(args.gpu_steps)


if __name__ == "__main__":
    main()
