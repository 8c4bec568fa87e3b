"""load_clip: checkpoint by path and file URI with checksum, random weights only when allowed."""

from __future__ import annotations

import pytest
import torch

from ganfolk.runtime.settings import ConfigError
from services.clip.loader import load_clip
from tests.clip.conftest import TINY_NAME, Tiny


def test_torchvision_imports_on_cpu_torch() -> None:
    import torchvision

    from ganfolk.runtime import tv_compat as _tv_compat

    assert torchvision.__version__
    # The schemas are defined exactly when torch is a CPU build (and the extension did not load).
    assert bool(_tv_compat.PATCHED) == (_tv_compat.is_cpu_build() and not torchvision.extension._has_ops())


def test_loads_checkpoint_by_path_with_checksum(tiny: Tiny) -> None:
    loaded = load_clip(TINY_NAME, str(tiny.checkpoint), "cpu", sha256=tiny.sha256, model_config=tiny.config)
    model, preprocess, tokenizer = loaded
    assert not model.training and loaded.dtype == torch.float32
    assert all(not p.requires_grad for p in model.parameters())
    saved = torch.load(tiny.checkpoint, weights_only=True)
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert loaded.ref.name == TINY_NAME and loaded.ref.sha256 == tiny.sha256 and not loaded.ref.random_weights
    assert tokenizer(["a cat"]).shape == (1, 16)
    assert loaded.preprocess_cfg["size"] in (32, (32, 32))
    assert preprocess is loaded.preprocess


def test_loads_checkpoint_by_file_uri(tiny: Tiny) -> None:
    loaded = load_clip(TINY_NAME, tiny.checkpoint.as_uri(), sha256=tiny.sha256, model_config=tiny.config)
    assert loaded.ref.source == tiny.checkpoint.as_uri()


def test_checksum_mismatch_is_refused(tiny: Tiny) -> None:
    with pytest.raises(ValueError, match="sha256"):
        load_clip(TINY_NAME, str(tiny.checkpoint), sha256="0" * 64, model_config=tiny.config)


def test_checkpoint_of_another_architecture_is_refused(tiny: Tiny, tmp_path) -> None:
    sd = torch.load(tiny.checkpoint, weights_only=True)
    sd["text_projection"] = torch.zeros(32, 8)
    bad = tmp_path / "bad.pt"
    torch.save(sd, bad)
    with pytest.raises(ValueError, match="does not fit"):
        load_clip(TINY_NAME, str(bad), model_config=tiny.config)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="GANFOLK_CLIP_CHECKPOINT"):
        load_clip(TINY_NAME, str(garbage), model_config=tiny.config)


def test_random_weights_only_when_allowed(tiny: Tiny) -> None:
    with pytest.raises(ConfigError, match="GANFOLK_CLIP_CHECKPOINT"):
        load_clip(TINY_NAME, None, model_config=tiny.config)
    loaded = load_clip(TINY_NAME, None, allow_random=True, model_config=tiny.config)
    assert loaded.random_weights and loaded.ref.random_weights


def test_unknown_or_hub_model_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="GANFOLK_CLIP_MODEL='ViT-Q-99' is not an open_clip architecture"):
        load_clip("ViT-Q-99", None, allow_random=True)
    with pytest.raises(ConfigError, match="hub"):
        load_clip("hf-hub:laion/CLIP-ViT-B-32", None, allow_random=True)


def test_missing_checkpoint_names_the_variable(tiny: Tiny, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="GANFOLK_CLIP_CHECKPOINT"):
        load_clip(TINY_NAME, str(tmp_path / "nope.pt"), model_config=tiny.config)
