"""ADA augmentation pipeline, the adaptive-p controller and the --aug parser."""

from __future__ import annotations

import argparse

import pytest
import torch

from services.stylegan.training import (
    AdaptiveP,
    AugmentConfig,
    AugmentPipe,
    AugmentSpec,
    AugmentSpecError,
    build_augment,
    parse_augment,
)
from services.stylegan.training.augment import BGC


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth(n: int = 4, size: int = 32) -> torch.Tensor:
    """Low-frequency RGB images, which the 2× resampling reproduces almost exactly."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    img = torch.stack([torch.sin(2 * xx + yy), torch.cos(3 * yy) * xx, xx * yy])
    return img.unsqueeze(0).repeat(n, 1, 1, 1)


# ---------------------------------------------------------------- pipeline


def test_p_zero_is_exact_identity() -> None:
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.equal(AugmentPipe(0.0)(x), x)


@pytest.mark.parametrize("op", BGC)
def test_each_op_at_p1_changes_image_keeps_layout(op: str) -> None:
    pipe = AugmentPipe(1.0, AugmentConfig(ops=(op,)))
    # 16 samples: a discrete op (e.g. flip or not) draws the identity for all of them with odds < 1e-4.
    x = torch.rand(16, 3, 16, 16, dtype=torch.float64) * 2 - 1
    out = pipe(x, generator=_gen(1))
    assert (out.shape, out.dtype, out.device) == (x.shape, x.dtype, x.device)
    assert not torch.equal(out, x), f"{op} at p=1 left every sample unchanged"
    assert torch.isfinite(out).all()


def test_gradients_flow_to_images() -> None:
    pipe = AugmentPipe(1.0)
    x = (torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1).requires_grad_()
    # A fixed generator makes every call draw the same transforms, so the map is deterministic.
    assert torch.autograd.gradcheck(lambda t: pipe(t, generator=_gen(0)), (x,), fast_mode=True)


def test_unselected_samples_pass_through_and_geometry_conventions() -> None:
    # xflip draws flip/no-flip per selected sample: each output is the input exactly or its mirror image.
    x = _smooth(8)
    out = AugmentPipe(0.5, AugmentConfig(ops=("xflip",)))(x, generator=_gen(3))
    kinds = []
    for o, i in zip(out, x, strict=True):
        if torch.equal(o, i):
            kinds.append("same")
        else:
            assert (o - i.flip(-1)).abs().max() < 0.02
            kinds.append("flip")
    assert set(kinds) == {"same", "flip"}

    rot = AugmentPipe(1.0, AugmentConfig(ops=("rotate90",)))(x, generator=_gen(4))
    for o, i in zip(rot, x, strict=True):
        errs = [(o - torch.rot90(i, k, (1, 2))).abs().max().item() for k in range(4)]
        assert min(errs) < 0.02, errs


def test_colour_ops_keep_the_luma_axis_for_grey() -> None:
    # Hue rotation and saturation act orthogonally to luma: a grey image stays grey and unchanged.
    grey = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(2, 3, 16, 16).contiguous()
    out = AugmentPipe(1.0, AugmentConfig(ops=("hue", "saturation")))(grey, generator=_gen(5))
    torch.testing.assert_close(out, grey, rtol=0, atol=1e-5)


def test_pipe_validation() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AugmentPipe(1.5)
    pipe = AugmentPipe(0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe.p = -0.1
    with pytest.raises(ValueError, match="unknown augmentations"):
        AugmentConfig(ops=("cutout",))
    with pytest.raises(ValueError, match="RGB"):
        AugmentPipe(1.0, AugmentConfig(ops=("hue",)))(torch.rand(2, 1, 8, 8), generator=_gen())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        AugmentPipe(1.0)(torch.rand(3, 8, 8))


# ---------------------------------------------------------------- adaptive p


def test_adaptive_p_rises_above_target_and_falls_below() -> None:
    ada = AdaptiveP(p=0.5, target=0.6, kimg=500, interval=4)
    confident = torch.ones(8, 1)  # r_t = 1 > 0.6: D overfits the reals
    for _ in range(3):
        assert ada.update(confident) == 0.5  # no adjustment before `interval` steps
    assert ada.update(confident) == pytest.approx(0.5 + 32 / 500_000)
    assert ada.rt == 1.0

    unsure = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])  # r_t = 0 < 0.6
    before = ada.p
    for _ in range(4):
        ada.update(unsure)
    assert ada.p == pytest.approx(before - 16 / 500_000)


def test_adaptive_p_speed_and_clamping() -> None:
    # 0 → 1 takes exactly kimg thousand images.
    ada = AdaptiveP(p=0.0, kimg=500, interval=1)
    for _ in range(499):
        ada.update(torch.ones(1000, 1))
    assert 0.99 < ada.p < 1.0
    ada.update(torch.ones(1000, 1))
    ada.update(torch.ones(1000, 1))
    assert ada.p == 1.0
    low = AdaptiveP(p=0.0, interval=1)
    low.update(-torch.ones(4, 1))
    assert low.p == 0.0


def test_adaptive_p_state_round_trip() -> None:
    ada = AdaptiveP(p=0.25, target=0.7, kimg=100, interval=2)
    ada.update(torch.ones(4, 1))
    state = ada.state_dict()
    assert state["p"] == 0.25
    restored = AdaptiveP()
    restored.load_state_dict(state)
    assert (restored.p, restored.target, restored.kimg, restored.interval) == (0.25, 0.7, 100.0, 2)
    restored.load_state_dict({"p": 0.125})  # rosinality checkpoints carry only ada_aug_p
    assert restored.p == 0.125
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        restored.load_state_dict({"p": 2.0})


# ---------------------------------------------------------------- --aug parser


def test_parse_augment_accepts_the_three_modes() -> None:
    assert parse_augment("none") == AugmentSpec("none")
    assert parse_augment("ada") == AugmentSpec("ada")
    assert parse_augment("fixed:0.3") == AugmentSpec("fixed", 0.3)
    assert parse_augment(" FIXED:1 ") == AugmentSpec("fixed", 1.0)
    assert str(parse_augment("fixed:0.3")) == "fixed:0.3" and str(parse_augment("ada")) == "ada"


@pytest.mark.parametrize(
    "bad", ["", "sometimes", "fixed", "fixed:", "fixed:abc", "fixed:1.5", "fixed:-0.1", "fixed:nan"]
)
def test_parse_augment_rejects_garbage(bad: str) -> None:
    with pytest.raises(AugmentSpecError, match="--aug"):
        parse_augment(bad)


def test_parse_augment_as_argparse_type(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--aug", type=parse_augment, default="ada")
    assert parser.parse_args(["--aug", "fixed:0.2"]).aug == AugmentSpec("fixed", 0.2)
    with pytest.raises(SystemExit):
        parser.parse_args(["--aug", "bogus"])
    assert "'none', 'ada' or 'fixed:P'" in capsys.readouterr().err


def test_build_augment() -> None:
    pipe, ada = build_augment("fixed:0.3")
    assert pipe.p == 0.3 and ada is None
    pipe, ada = build_augment("none")
    assert pipe.p == 0.0 and ada is None
    pipe, ada = build_augment(AugmentSpec("ada"), target=0.5)
    assert ada is not None and ada.target == 0.5 and pipe.p == ada.p == 0.0
