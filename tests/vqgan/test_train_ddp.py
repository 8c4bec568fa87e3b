"""Data parallelism on the CPU (gloo): two processes with half the batch each compute what one does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from services.training import dist
from services.vqgan.training.checkpoints import read_spec
from services.vqgan.training.config import VQTrainConfig
from services.vqgan.training.loop import Trainer
from tests.vqgan.train_fixtures import YAML, make_setup, random_lpips

REPO = Path(__file__).resolve().parents[2]
STEP = 5  # past disc_start below: the adversarial term, the adaptive weight and D's BatchNorm all act


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def trainer(env: dist.DistEnv, lpips: Path) -> Trainer:
    cfg = VQTrainConfig("-", "-", str(YAML), batch=4 // env.world_size, device="cpu", disc_start=0)
    t = Trainer(cfg, env, read_spec(YAML, "test", disc_start=0))
    t.loss.perceptual_loss.load(torch.load(lpips, weights_only=True), "test")
    return t


def batch() -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1


def grads(t: Trainer, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both phases' gradients of one step (the D phase on the pre-step reconstructions), no updates."""
    xrec = t.ae_backward(x, STEP)
    out = {f"ae.{n}": p.grad.clone() for n, p in t.model.named_parameters()}
    t.d_backward(x, xrec, STEP)
    out.update({f"d.{n}": p.grad.clone() for n, p in t.loss.discriminator.named_parameters()})
    out["d_weight"] = t._sums["d_weight"].clone()
    return out


def _rank(rank: int, port: int, folder: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    env = dist.init_distributed("cpu", timeout_s=120)
    try:
        t = trainer(env, Path(folder) / "lpips.pt")
        torch.save(grads(t, batch()[2 * rank : 2 * rank + 2]), Path(folder) / f"grads{rank}.pt")
        # Whole steps on each rank's own data keep the ranks identical.
        torch.manual_seed(rank)
        for i in range(3):
            t.step(STEP + i, torch.rand(2, 3, 32, 32) * 2 - 1)
        torch.save({**t.state_dict(), "ae_optim": t.ae_optim.state_dict()}, Path(folder) / f"state{rank}.pt")
    finally:
        dist.shutdown()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("vqddp")
    random_lpips(folder / "lpips.pt")
    mp.spawn(_rank, args=(free_port(), str(folder)), nprocs=2, join=True)
    return folder


def test_two_processes_give_the_one_process_gradients(two_ranks: Path) -> None:
    single = grads(trainer(dist.DistEnv(0, 0, 1, torch.device("cpu")), two_ranks / "lpips.pt"), batch())
    assert single["d_weight"] > 0
    for rank in (0, 1):
        split = torch.load(two_ranks / f"grads{rank}.pt")
        assert split.keys() == single.keys()
        for name, g in single.items():
            torch.testing.assert_close(split[name], g, rtol=1e-3, atol=2e-6, msg=f"rank {rank}: {name}")


def test_ranks_stay_identical_after_steps(two_ranks: Path) -> None:
    a, b = (torch.load(two_ranks / f"state{r}.pt") for r in (0, 1))
    for name, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[name]), f"{name} differs between ranks"
    for key, sa in a["ae_optim"]["state"].items():
        assert torch.equal(sa["exp_avg_sq"], b["ae_optim"]["state"][key]["exp_avg_sq"])


@pytest.mark.slow
def test_cli_torchrun_two_processes(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, images=12)
    cfg = setup.config("run", steps=2, batch=2, gpus=2, snapshot_every=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "ganfolk.cli", "train", "vqgan", *cfg.to_argv()],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "000002.ckpt").is_file() and (tmp_path / "run" / "000002.yaml").is_file()
