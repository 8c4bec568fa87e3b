"""Inputs for the VQGAN training tests: the golden tiny model, random LPIPS weights, a disc dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.stylegan.training.data import make_disc_dataset
from services.vqgan.training import LPIPS
from services.vqgan.training.config import VQTrainConfig
from tests.fixtures import golden

CKPT, YAML = golden.path("vqgan_tiny.ckpt"), golden.path("vqgan_tiny.yaml")


def random_lpips(path: Path, seed: int = 0) -> Path:
    """An LPIPS state dict with random VGG/lin weights: only ever for tests (nothing is downloaded)."""
    torch.manual_seed(seed)
    sd = LPIPS().state_dict()
    sd = {k: v if k.startswith("scaling_layer.") else torch.randn_like(v) * 0.05 for k, v in sd.items()}
    # Positive lin weights, as trained LPIPS has: the distance is then a sum of squared differences.
    sd = {k: v.abs() if k.startswith("lin") else v for k, v in sd.items()}
    torch.save(sd, path)
    return path


@dataclass
class Setup:
    root: Path
    data: Path
    lpips: Path

    def config(self, out: str = "run", **kw: Any) -> VQTrainConfig:
        base: dict[str, Any] = dict(
            data=str(self.data),
            out=str(self.root / out),
            config=str(YAML),
            init=str(CKPT),
            lpips=[str(self.lpips)],
            steps=4,
            batch=2,
            holdout=4,
            workers=0,
            grid=4,
            device="cpu",
            log_every=2,
            snapshot_every=2,
            cache_dir=str(self.root / "cache"),
        )
        return VQTrainConfig(**{**base, **kw}).validate()


def make_setup(root: Path, images: int = 16) -> Setup:
    data = root / "data"
    make_disc_dataset(data, images, 32, seed=1)
    return Setup(root, data, random_lpips(root / "lpips.pt"))
