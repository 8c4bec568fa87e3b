"""A run killed with SIGKILL continues from its last checkpoint with the same optimiser and ADA state."""

from __future__ import annotations

import copy
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from services.stylegan.training import loop, run
from services.stylegan.training.checkpoints import open_output
from services.stylegan.training.config import TrainConfig
from services.stylegan.training.data import make_disc_dataset

REPO = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        size=32,
        batch=4,
        iterations=400,
        fmap_max=32,
        style_dim=32,
        n_mlp=2,
        workers=0,
        metric_images=0,
        grid=4,
        device="cpu",
        log_every=1000,
        snapshot_kimg=0.008,  # every 2 steps
        keep=3,
        aug="ada",
        ada_kimg=0.05,
        cache_dir=str(tmp_path / "cache"),
    )
    return TrainConfig(str(tmp_path / "data"), str(tmp_path / "run"), **{**base, **kw}).validate()


def assert_same_state(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_kill_9_then_restart_resumes_at_the_saved_iteration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_disc_dataset(tmp_path / "data", 16, 32)
    cfg = config(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("WORLD_SIZE", None)
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ganfolk.cli", "train", "stylegan", *cfg.to_argv()],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 240
            while not list(out.glob("*.pt.sha256")):
                assert proc.poll() is None, (tmp_path / "log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint within 240 s"
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    output = open_output(out)
    saved = output.latest()
    assert saved is not None and saved.iteration % 2 == 0
    ckpt = output.load(saved, 32)

    # Restart the same run (in this process, to look at the resumed state before its first step).
    first: dict[str, Any] = {}
    step = loop.Trainer.step

    def spy(self: loop.Trainer, iteration: int, real: torch.Tensor) -> None:
        if not first:
            first.update(
                iteration=iteration,
                g_optim=copy.deepcopy(self.g_optim.state_dict()),
                d_optim=copy.deepcopy(self.d_optim.state_dict()),
                g=copy.deepcopy(self.g.state_dict()),
                ada_p=self.ada_p,
                mean_path_length=float(self.mean_path_length),
            )
        step(self, iteration, real)

    monkeypatch.setattr(loop.Trainer, "step", spy)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    end = saved.iteration + 2
    assert run.main([*cfg.to_argv(), "--iterations", str(end)]) == 0

    assert first["iteration"] == saved.iteration
    assert_same_state(first["g_optim"], ckpt["g_optim"], "g_optim")
    assert_same_state(first["d_optim"], ckpt["d_optim"], "d_optim")
    assert_same_state(first["g"], ckpt["g"], "g")
    assert first["ada_p"] == ckpt["ada_aug_p"] and first["mean_path_length"] == ckpt["mean_path_length"]

    # Adam's step counts carried on: main steps plus the lazy-regulariser steps of every iteration.
    final = output.load(output.latest() or saved, 32)
    assert output.latest() is not None and output.latest().iteration == end  # type: ignore[union-attr]
    d_steps = end + math.ceil(end / 16)
    g_steps = end + math.ceil(end / 4)
    assert {float(s["step"]) for s in final["d_optim"]["state"].values()} == {d_steps}
    assert {float(s["step"]) for s in final["g_optim"]["state"].values()} == {g_steps}
    assert (out / f"{end:06d}.png").is_file()
    assert len(output.checkpoints()) <= 3


def test_elastic_restart_command_is_torchrun_with_restarts(tmp_path: Path) -> None:
    cfg = config(tmp_path, gpus=8, batch=32, max_restarts=3)
    cmd = run.launch_command(cfg)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--nproc-per-node=8" in cmd and "--max-restarts=3" in cmd
    entry = cmd.index("services.stylegan.training.run")
    # The restarted workers re-run the same options, and --resume auto continues the latest checkpoint.
    assert cmd[entry + 1 :] == cfg.to_argv() and cfg.resume == "auto"

    many = config(tmp_path, gpus=8, batch=64, nnodes="2:4", rdzv_endpoint="head:29400", rdzv_id="faces")
    cmd = run.launch_command(many)
    assert "--nnodes=2:4" in cmd and "--rdzv-backend=c10d" in cmd and "--rdzv-endpoint=head:29400" in cmd
    assert "--rdzv-id=faces" in cmd and "--standalone" not in cmd
