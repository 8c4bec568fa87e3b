"""StyleGAN2 discriminator and training losses vs the golden rosinality outputs and key layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ganfolk.runtime.hashing import file_sha256
from services.stylegan import (
    Discriminator,
    DiscriminatorConfig,
    build_discriminator,
    load_discriminator,
    load_generator,
)
from services.stylegan.training import (
    d_logistic_loss,
    d_r1_loss,
    g_nonsaturating_loss,
    g_path_regularize,
)
from tests.fixtures import golden

CKPT = golden.path("stylegan2_d_tiny.pt")
IO = golden.path("stylegan2_d_tiny_io.pt")
TOL = 5e-5


@pytest.fixture(scope="module")
def d() -> Discriminator:
    return load_discriminator(CKPT)


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return torch.load(IO, map_location="cpu", weights_only=True)


def _check(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got - want).abs().max().item()
    print(f"{name}: max abs error {err:.3g}")
    assert err <= TOL, f"{name}: max abs error {err:.3g} > {TOL}"


# ---------------------------------------------------------------- golden outputs


def test_config_inferred_from_tensors(d: Discriminator) -> None:
    cfg = d.config
    assert cfg.size == 32
    assert cfg.channels == {4: 32, 8: 32, 16: 32, 32: 32}
    assert (cfg.stddev_group, cfg.stddev_feat, cfg.blur_kernel) == (4, 1, (1, 3, 3, 1))
    assert all(p.requires_grad for p in d.parameters()), "a loaded discriminator stays trainable"


def test_golden_predictions_and_losses(d: Discriminator, io: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        real_pred, fake_pred = d(io["real"]), d(io["fake"])
    _check("real_pred", real_pred, io["real_pred"])
    _check("fake_pred", fake_pred, io["fake_pred"])
    _check("d_logistic_loss", d_logistic_loss(real_pred, fake_pred), io["d_logistic_loss"])
    _check("g_nonsaturating_loss", g_nonsaturating_loss(fake_pred), io["g_nonsaturating_loss"])

    real = io["real"].clone().requires_grad_()
    r1 = d_r1_loss(d(real), real)
    _check("d_r1_loss", r1, io["d_r1_loss"])
    # create_graph: the penalty must itself be differentiable w.r.t. D's weights.
    (grad,) = torch.autograd.grad(r1, dict(d.named_parameters())["final_linear.1.weight"])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------- public layout


def test_public_512_layout_matches_key_list() -> None:
    want = [(k, tuple(s)) for k, s in json.loads(golden.path("stylegan2_d_keys_512_cm2.json").read_text())]
    cfg = DiscriminatorConfig.rosinality(512, channel_multiplier=2)
    d = build_discriminator(cfg, device="meta")  # shapes only: the real one is ~29M parameters
    got = [(k, tuple(v.shape)) for k, v in d.state_dict().items()]
    assert got == want
    assert DiscriminatorConfig.from_state_dict(d.state_dict()) == cfg


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="power of two"):
        DiscriminatorConfig(size=48, channels={})
    with pytest.raises(ValueError, match="lacks widths"):
        DiscriminatorConfig(size=32, channels={4: 8, 8: 8})
    with pytest.raises(ValueError, match="stddev_feat"):
        DiscriminatorConfig(size=8, channels={4: 6, 8: 6}, stddev_feat=4)


def test_stddev_feat_adds_channels_and_batch_rules() -> None:
    torch.manual_seed(0)
    cfg = DiscriminatorConfig(size=8, channels={4: 8, 8: 8}, stddev_group=2, stddev_feat=2)
    d = build_discriminator(cfg)
    assert d.state_dict()["final_conv.0.weight"].shape[1] == 8 + 2
    assert DiscriminatorConfig.from_state_dict(d.state_dict(), stddev_group=2) == cfg
    assert d(torch.randn(6, 3, 8, 8)).shape == (6, 1)
    assert d(torch.randn(1, 3, 8, 8)).shape == (1, 1)  # group shrinks to the batch
    with pytest.raises(ValueError, match="multiple of the stddev group"):
        d(torch.randn(3, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, 3, 8, 8\)"):
        d(torch.randn(2, 3, 16, 16))


# ---------------------------------------------------------------- loader errors


def test_checkpoint_without_d_is_rejected() -> None:
    # The sampling checkpoint holds only g_ema.
    with pytest.raises(ValueError, match="no 'd' entry"):
        load_discriminator(golden.path("stylegan2_tiny.pt"))


def test_non_stylegan_files_are_rejected(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"d": {"conv.weight": torch.zeros(3, 3)}}, other)
    with pytest.raises(ValueError, match="not a rosinality StyleGAN2 discriminator"):
        load_discriminator(other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_discriminator(junk)
    with pytest.raises(FileNotFoundError):
        load_discriminator(tmp_path / "missing.pt")


def test_inconsistent_state_dict_and_checksum(tmp_path: Path) -> None:
    sd = torch.load(CKPT, map_location="cpu", weights_only=True)["d"]
    sd = dict(sd)
    sd["final_linear.0.weight"] = sd["final_linear.0.weight"][:, :100]
    bad = tmp_path / "bad.pt"
    torch.save({"d": sd}, bad)
    with pytest.raises(ValueError, match="does not match the inferred architecture"):
        load_discriminator(bad)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_discriminator(CKPT, sha256="0" * 64)
    assert load_discriminator(CKPT, sha256=file_sha256(CKPT)).config.size == 32


# ---------------------------------------------------------------- path-length regulariser


def test_path_regularize_matches_analytic_jacobian() -> None:
    # img = A · latents is linear, so the gradient of (img · y) w.r.t. latents is Aᵀ y exactly.
    torch.manual_seed(0)
    n, n_latent, dim = 3, 4, 5
    a = torch.randn(3 * 6 * 6, n_latent * dim, dtype=torch.float64, requires_grad=True)
    latents = torch.randn(n, n_latent, dim, dtype=torch.float64, requires_grad=True)
    img = (latents.reshape(n, -1) @ a.T).reshape(n, 3, 6, 6)

    torch.manual_seed(1)
    penalty, mean, lengths = g_path_regularize(img, latents, 0.5, decay=0.1)
    torch.manual_seed(1)
    y = torch.randn(n, 3, 6, 6, dtype=torch.float64) / 6.0  # randn_like / sqrt(H·W)

    grad = (y.reshape(n, -1) @ a.detach()).reshape(n, n_latent, dim)
    want_lengths = grad.pow(2).sum(2).mean(1).sqrt()
    want_mean = 0.5 + 0.1 * (want_lengths.mean() - 0.5)
    torch.testing.assert_close(lengths, want_lengths)
    torch.testing.assert_close(mean, want_mean)
    torch.testing.assert_close(penalty, (want_lengths - want_mean).pow(2).mean())
    # The penalty reaches the "generator weights" A through the gradient (create_graph).
    assert not mean.requires_grad and penalty.requires_grad


def test_path_regularize_on_generator_matches_per_sample() -> None:
    g = load_generator(golden.path("stylegan2_tiny.pt")).requires_grad_(True)
    torch.manual_seed(3)
    z = torch.randn(2, g.style_dim)
    img, latents = g([z], return_latents=True, randomize_noise=False)
    assert latents is not None
    torch.manual_seed(4)
    penalty, mean, lengths = g_path_regularize(img, latents, torch.tensor(0.0))
    torch.manual_seed(4)
    y = torch.randn_like(img) / 32.0

    for i in range(2):
        w = latents[i : i + 1].detach().requires_grad_()
        out, _ = g([w], input_is_latent=True, randomize_noise=False)
        (gw,) = torch.autograd.grad((out * y[i : i + 1]).sum(), w)
        torch.testing.assert_close(lengths[i], gw.pow(2).sum(2).mean().sqrt(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean, 0.01 * lengths.detach().mean())
    penalty.backward()  # second-order through the generator
    assert g.style[1].weight.grad is not None
