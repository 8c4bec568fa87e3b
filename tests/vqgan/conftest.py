"""The golden tiny VQGAN (f2, 32 px) and a tiny random open_clip checkpoint made for these tests."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ganfolk.runtime.hashing import file_sha256
from tests.fixtures import golden
from tests.fixtures.tiny_clip import TINY_CLIP_CONFIG, save_tiny_clip

CKPT, YAML = golden.path("vqgan_tiny.ckpt"), golden.path("vqgan_tiny.yaml")

# A one-layer ViT on 32 px images (the golden VQGAN's size): an iteration takes tens of ms on CPU.
CLIP_NAME = "tiny-clip-vqgan-test"
CLIP_CONFIG = TINY_CLIP_CONFIG


@dataclass(frozen=True)
class Models:
    clip_config: Path
    clip_checkpoint: Path
    clip_sha256: str

    def env(self, **overrides: Any) -> dict[str, Any]:
        """Settings (as GANFOLK_* variables) that point the service at the golden VQGAN + tiny CLIP."""
        base: dict[str, Any] = {
            "GANFOLK_VQGAN_CHECKPOINT": str(CKPT),
            "GANFOLK_VQGAN_CONFIG": str(YAML),
            "GANFOLK_VQGAN_CHECKPOINT_SHA256": file_sha256(CKPT),
            "GANFOLK_VQGAN_CLIP_MODEL": CLIP_NAME,
            "GANFOLK_VQGAN_CLIP_MODEL_CONFIG": str(self.clip_config),
            "GANFOLK_VQGAN_CLIP_CHECKPOINT": str(self.clip_checkpoint),
            "GANFOLK_VQGAN_CLIP_SHA256": self.clip_sha256,
            "GANFOLK_VQGAN_DEFAULT_SIZE": "32",
            "GANFOLK_VQGAN_CPU_THREADS": "1",
            "GANFOLK_DEVICE": "cpu",
        }
        base.update({f"GANFOLK_{k.upper()}": str(v) for k, v in overrides.items()})
        return base

    def settings(self, **overrides: Any) -> Any:
        from services.vqgan.config import VQGANSettings

        values = {k.removeprefix("GANFOLK_").lower(): v for k, v in self.env(**overrides).items()}
        return VQGANSettings(**values)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """On a shared, busy CPU, spinning OpenMP threads make these small models many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(*save_tiny_clip(tmp_path_factory.mktemp("vqgan-clip"), CLIP_NAME, 4321))


@pytest.fixture(scope="session")
def core(models: Models) -> Any:
    from services.vqgan.core import load_core

    return load_core(models.settings())


def face(seed: int = 0, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A smooth colourful test image (not square, so the centre crop is exercised)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
