"""A VQGAN run killed with SIGKILL continues from its last checkpoint: step, weights and both optimisers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from services.vqgan.training import run
from services.vqgan.training.checkpoints import open_vq_output
from tests.vqgan.train_fixtures import make_setup

REPO = Path(__file__).resolve().parents[2]


def test_kill_9_then_resume_latest_continues_at_the_saved_step(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, images=12)
    cfg = setup.config("run", steps=400, snapshot_every=2, keep=3, disc_start=3, log_every=1000)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.vqgan.training.run", *cfg.to_argv()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    out = open_vq_output(cfg.out)
    try:
        deadline = time.monotonic() + 240
        while (out.latest() is None or out.latest().iteration < 4) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = out.latest()
    assert saved is not None and saved.iteration >= 4
    before = out.load(saved)

    seen: list[int] = []
    from services.vqgan.training import loop

    original = loop.Trainer.step

    def spy(self: loop.Trainer, step: int, x: torch.Tensor) -> None:
        if not seen:
            # The restored state is the checkpoint's, before any new step.
            assert (
                self.ae_optim.state_dict()["state"][0]["step"]
                == before["optimizer_states"][0]["state"][0]["step"]
            )
            d_state = self.d_optim.state_dict()["state"]
            assert d_state[0]["step"] == before["optimizer_states"][1]["state"][0]["step"]
            sd = self.state_dict()
            for name, value in before["state_dict"].items():
                assert torch.equal(sd[name], value), name
        seen.append(step)
        original(self, step, x)

    loop.Trainer.step = spy  # type: ignore[method-assign]
    try:
        resumed = setup.config(
            "run", steps=saved.iteration + 2, snapshot_every=2, keep=3, disc_start=3, resume="latest"
        )
        assert run.worker(resumed) == 0
    finally:
        loop.Trainer.step = original  # type: ignore[method-assign]
    assert seen == [saved.iteration, saved.iteration + 1]
    assert out.latest().iteration == saved.iteration + 2
