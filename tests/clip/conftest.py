"""A tiny random open_clip model saved as a checkpoint file, loaded back through the real loader."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from services.clip.config import ClipSettings
from services.clip.core import ClipCore, load_core
from tests.fixtures.tiny_clip import TINY_CLIP_CONFIG, save_tiny_clip

# Two one-layer towers, 32 px images, 16-token context: a forward pass takes milliseconds on CPU.
TINY_NAME = "tiny-clip-test"
TINY_CONFIG = TINY_CLIP_CONFIG


@dataclass(frozen=True)
class Tiny:
    config: Path
    checkpoint: Path
    sha256: str

    def env(self, **overrides: Any) -> dict[str, Any]:
        """Settings overrides that point a CLIP service at the tiny checkpoint."""
        base: dict[str, Any] = {
            "clip_model": TINY_NAME,
            "clip_model_config": str(self.config),
            "clip_checkpoint": str(self.checkpoint),
            "clip_checkpoint_sha256": self.sha256,
            "device": "cpu",
            "allow_random_weights": False,
        }
        return {**base, **overrides}

    def settings(self, **overrides: Any) -> ClipSettings:
        return ClipSettings(**self.env(**overrides))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return Tiny(*save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), TINY_NAME, 1234))


@pytest.fixture
def make_core(tiny: Tiny) -> Callable[..., ClipCore]:
    def make(**overrides: Any) -> ClipCore:
        return load_core(tiny.settings(**overrides))

    return make


@pytest.fixture
def core(make_core: Callable[..., ClipCore]) -> ClipCore:
    return make_core()


def noise_image(seed: int, size: tuple[int, int] = (40, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
