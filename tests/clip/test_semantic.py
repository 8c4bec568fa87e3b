"""With real CLIP weights, photos that ship in scikit-image score as a person would expect.

Runs only when real weights are configured (no registry ships CLIP weights):

    GANFOLK_CLIP_TEST_CHECKPOINT=/path/to/ViT-B-32.pt [GANFOLK_CLIP_TEST_MODEL=ViT-B-32] pytest tests/clip
"""

from __future__ import annotations

import os

import pytest
from PIL import Image

from services.clip.config import ClipSettings
from services.clip.core import Prompt, load_core

CHECKPOINT = os.environ.get("GANFOLK_CLIP_TEST_CHECKPOINT")

pytestmark = pytest.mark.skipif(not CHECKPOINT, reason="needs GANFOLK_CLIP_TEST_CHECKPOINT (real weights)")


def test_cat_and_rocket_photos_match_their_prompts() -> None:
    data = pytest.importorskip("skimage.data")
    settings = ClipSettings(
        clip_model=os.environ.get("GANFOLK_CLIP_TEST_MODEL", "ViT-B-32"),
        clip_checkpoint=CHECKPOINT,
        clip_checkpoint_sha256=os.environ.get("GANFOLK_CLIP_TEST_CHECKPOINT_SHA256"),
    )
    core = load_core(settings)
    cat, rocket = Image.fromarray(data.chelsea()), Image.fromarray(data.rocket())
    for_cat = core.rank([Prompt("a photo of a cat")], [cat, rocket])
    for_rocket = core.rank([Prompt("a photo of a rocket")], [cat, rocket])
    assert for_cat[0] > for_rocket[0]  # the cat photo: "cat" beats "rocket"
    assert for_rocket[1] > for_cat[1]  # the rocket photo: the reverse
    assert for_cat[0] > for_cat[1] and for_rocket[1] > for_rocket[0]
