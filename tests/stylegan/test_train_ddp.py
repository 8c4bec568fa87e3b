"""Data parallelism on the CPU (gloo): two processes compute what one does, and stay identical."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from services.stylegan.training import dist, loop
from services.stylegan.training.config import TrainConfig
from services.stylegan.training.data import make_disc_dataset

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny(data: str = "-", out: str = "-", **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        size=32,
        batch=4,
        iterations=4,
        fmap_max=32,
        style_dim=32,
        n_mlp=2,
        workers=0,
        metric_images=0,
        grid=0,
        device="cpu",
        log_every=2,
    )
    return TrainConfig(data, out, **{**base, **kw}).validate()


def fixed_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    return torch.randn(4, 3, 32, 32, generator=gen).clamp(-1, 1), torch.randn(4, 32, generator=gen)


def grads(trainer: loop.Trainer, real: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """D (main, then R1) and G gradients of one step, without optimiser steps."""
    out = {}
    trainer.d_backward(real, [z])
    out.update({f"d.{n}": p.grad.clone() for n, p in trainer.d.named_parameters()})
    trainer.r1_backward(real)
    out.update({f"r1.{n}": p.grad.clone() for n, p in trainer.d.named_parameters()})
    trainer.g_backward([z])
    out.update({f"g.{n}": p.grad.clone() for n, p in trainer.g.named_parameters()})
    return out


def one_step_config() -> TrainConfig:
    # Minibatch-stddev groups of 1 and no mixing/augmentation/noise make a sample's loss
    # independent of the others: then 2 x 2 images must give the gradients of 1 x 4.
    return tiny(mbstd_group=1, mixing=0.0, aug="none")


def _rank(rank: int, port: int, folder: str, data: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    env = dist.init_distributed("cpu", timeout_s=120)
    try:
        trainer = loop.Trainer(one_step_config(), env)
        trainer.randomize_noise = False
        real, z = fixed_inputs()
        share = slice(2 * rank, 2 * rank + 2)
        torch.save(grads(trainer, real[share], z[share]), Path(folder) / f"grads{rank}.pt")

        # A few whole steps on each rank's own data, with ADA and every lazy phase.
        cfg = tiny(data, aug="ada", ada_kimg=0.01)
        trainer = loop.Trainer(cfg, env)
        torch.manual_seed(rank)  # different latents and data per rank, as in training
        for i in range(4):
            trainer.step(i, torch.rand(2, 3, 32, 32) * 2 - 1)
        state = {
            "g": trainer.g.state_dict(),
            "d": trainer.d.state_dict(),
            "g_ema": trainer.g_ema.state_dict(),
            "g_optim": trainer.g_optim.state_dict(),
            "ada_p": trainer.ada_p,
            "ada_rt": trainer.ada.rt if trainer.ada is not None else None,
            "mean_path_length": float(trainer.mean_path_length),
        }
        torch.save(state, Path(folder) / f"state{rank}.pt")
    finally:
        dist.shutdown()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank, args=(free_port(), str(folder), "-"), nprocs=2, join=True)
    return folder


def test_two_processes_average_to_the_one_process_gradient(two_ranks: Path) -> None:
    trainer = loop.Trainer(one_step_config(), dist.DistEnv(0, 0, 1, torch.device("cpu")))
    trainer.randomize_noise = False
    real, z = fixed_inputs()
    single = grads(trainer, real, z)
    for rank in (0, 1):
        split = torch.load(two_ranks / f"grads{rank}.pt")
        assert split.keys() == single.keys()
        for name, g in single.items():
            torch.testing.assert_close(split[name], g, rtol=1e-4, atol=1e-6, msg=f"rank {rank}: {name}")


def test_ranks_stay_identical_after_steps(two_ranks: Path) -> None:
    a, b = (torch.load(two_ranks / f"state{r}.pt") for r in (0, 1))
    for net in ("g", "d", "g_ema"):
        for name in a[net]:
            assert torch.equal(a[net][name], b[net][name]), f"{net}.{name} differs between ranks"
    for key, sa in a["g_optim"]["state"].items():
        assert torch.equal(sa["exp_avg_sq"], b["g_optim"]["state"][key]["exp_avg_sq"])
    assert a["mean_path_length"] == b["mean_path_length"] > 0
    # The 4th step adjusted p from both ranks' signs, so both saw the same statistic.
    assert a["ada_rt"] is not None and a["ada_rt"] == b["ada_rt"] and a["ada_p"] == b["ada_p"]


@pytest.mark.slow
def test_cli_torchrun_two_processes(tmp_path: Path) -> None:
    make_disc_dataset(tmp_path / "data", 8, 32)
    out = tmp_path / "run"
    argv = tiny(str(tmp_path / "data"), str(out), cache_dir=str(tmp_path / "cache")).to_argv()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "ganfolk.cli", "train", "stylegan", *argv, "--gpus", "2", "--log-every", "4"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "000004.pt", weights_only=False)
    assert ckpt["args"]["distributed"] is True and ckpt["args"]["batch"] == 2
    assert "world_size=2" in proc.stderr
