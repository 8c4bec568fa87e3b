"""StyleGAN2 port vs the golden rosinality outputs, checkpoint formats and the seed → z mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ganfolk.runtime.hashing import file_sha256
from services.stylegan import (
    Generator,
    GeneratorConfig,
    build_generator,
    load_generator,
    z_batch,
    z_from_seed,
)
from tests.fixtures import golden

GOLDEN = golden.GOLDEN
CKPT = golden.path("stylegan2_tiny.pt")
IO = golden.path("stylegan2_tiny_io.pt")
TOL = 5e-5


@pytest.fixture(scope="module")
def g() -> Generator:
    return load_generator(CKPT)


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return torch.load(IO, map_location="cpu", weights_only=True)


def _check(name: str, got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got - want).abs().max().item()
    print(f"{name}: max abs error {err:.3g}")
    assert err <= TOL, f"{name}: max abs error {err:.3g} > {TOL}"
    return err


# ---------------------------------------------------------------- golden outputs


def test_config_inferred_from_tensors(g: Generator) -> None:
    cfg = g.config
    assert (cfg.size, cfg.style_dim, cfg.n_mlp) == (32, 64, 2)
    assert cfg.channels == {4: 32, 8: 32, 16: 32, 32: 32}
    assert (g.n_latent, g.num_layers) == (8, 7)
    assert not g.training
    assert g.latent_avg is not None and g.latent_avg.shape == (1, 64)


def test_golden_outputs(g: Generator, io: dict[str, torch.Tensor]) -> None:
    z, z2, w, avg = io["z"], io["z2"], io["w"], io["latent_avg"]
    torch.testing.assert_close(g.latent_avg, avg, rtol=0, atol=0)
    errs: dict[str, float] = {}
    with torch.no_grad():
        errs["w"] = _check("w", g.get_latent(z), w)
        img, lat = g([z], truncation=1.0, randomize_noise=False)
        assert lat is None
        errs["img_trunc1"] = _check("img_trunc1", img, io["img_trunc1"])
        img, _ = g([z], truncation=0.7, truncation_latent=avg, randomize_noise=False)
        errs["img_trunc07"] = _check("img_trunc07", img, io["img_trunc07"])
        # the stored latent_avg is the default truncation_latent
        img, _ = g([z], truncation=0.7, randomize_noise=False)
        errs["img_trunc07_default_avg"] = _check("img_trunc07 (stored latent_avg)", img, io["img_trunc07"])
        img, _ = g([w], input_is_latent=True, randomize_noise=False)
        errs["img_from_w"] = _check("img_from_w", img, io["img_from_w"])
        img, lat = g([z, z2], inject_index=3, randomize_noise=False, return_latents=True)
        errs["img_mix_inject3"] = _check("img_mix_inject3", img, io["img_mix_inject3"])
        assert lat is not None
        errs["latents_mix_inject3"] = _check("latents_mix_inject3", lat, io["latents_mix_inject3"])
        # a full (N, n_latent, style_dim) W reproduces the mixed image too
        img, _ = g([lat], input_is_latent=True, randomize_noise=False)
        errs["img_from_wplus"] = _check("img_from_w+", img, io["img_mix_inject3"])
    print("golden max abs errors:", {k: f"{v:.3g}" for k, v in errs.items()})


def test_training_mode_matches_golden(io: dict[str, torch.Tensor]) -> None:
    # Training scales activations around one shared conv instead of building per-sample weights:
    # the same function, so the golden images hold in train mode too, and so do the gradients.
    g = load_generator(CKPT).train().requires_grad_(True)
    img, _ = g([io["z"]], truncation=1.0, randomize_noise=False)
    _check("img_trunc1 (train mode)", img.detach(), io["img_trunc1"])
    grads = []
    for fused in (True, False):
        for m in g.modules():
            if hasattr(m, "fused"):
                m.fused = fused
        g.zero_grad()
        g([io["z"]], randomize_noise=False)[0].square().mean().backward()
        grads.append([p.grad.clone() for p in g.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_explicit_noise_and_random_noise(g: Generator, io: dict[str, torch.Tensor]) -> None:
    z = io["z"]
    fixed = [getattr(g.noises, f"noise_{i}") for i in range(g.num_layers)]
    with torch.no_grad():
        img, _ = g([z], noise=fixed)
        _check("img_trunc1 (explicit noise list)", img, io["img_trunc1"])
        noises = g.make_noise()
        assert [n.shape[-1] for n in noises] == [4, 8, 8, 16, 16, 32, 32]
        torch.manual_seed(0)
        a, _ = g([z])
        b, _ = g([z])
        assert (a - b).abs().max() > 0  # randomize_noise=True draws fresh noise
        m = g.mean_latent(256)
        assert m.shape == (1, 64)


def test_truncation_without_latent_fails_clearly() -> None:
    cfg = GeneratorConfig(size=8, style_dim=8, n_mlp=1, channels={4: 4, 8: 4})
    gen = build_generator(cfg).eval()
    with pytest.raises(ValueError, match="truncation_latent"):
        gen([torch.randn(1, 8)], truncation=0.5)


# ---------------------------------------------------------------- public formats


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_public_key_manifest(size: int) -> None:
    manifest = json.loads((GOLDEN / f"stylegan2_keys_{size}_cm2.json").read_text())
    cfg = GeneratorConfig.rosinality(size)
    gen = build_generator(cfg, device="meta")
    got = [[k, list(v.shape)] for k, v in gen.state_dict().items()]
    assert got == manifest
    # and the shapes alone give back the same architecture
    assert GeneratorConfig.from_state_dict(gen.state_dict()) == cfg
    assert hash(GeneratorConfig.from_state_dict(gen.state_dict())) == hash(cfg)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(size=48, style_dim=8, n_mlp=1, channels={4: 4})
    with pytest.raises(ValueError, match="lacks widths"):
        GeneratorConfig(size=16, style_dim=8, n_mlp=1, channels={4: 4, 8: 4})
    with pytest.raises(ValueError, match="missing key"):
        GeneratorConfig.from_state_dict({"style.1.weight": torch.zeros(8, 8)})


def _tiny_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_generator(GeneratorConfig(size=8, style_dim=8, n_mlp=2, channels={4: 16, 8: 4})).state_dict()


def test_latent_avg_1d_and_2d(tmp_path: Path) -> None:
    sd = _tiny_sd()
    avg = torch.randn(8)
    for name, stored in [("one_d", avg), ("two_d", avg[None]), ("none", None)]:
        ckpt: dict[str, object] = {"g_ema": sd}
        if stored is not None:
            ckpt["latent_avg"] = stored
        path = tmp_path / f"{name}.pt"
        torch.save(ckpt, path)
        gen = load_generator(path)
        assert gen.config.channels == {4: 16, 8: 4}
        if stored is None:
            assert gen.latent_avg is None
        else:
            assert gen.latent_avg is not None and gen.latent_avg.shape == (1, 8)
            torch.testing.assert_close(gen.latent_avg, avg[None], rtol=0, atol=0)
    bad = tmp_path / "bad_avg.pt"
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(3, 8)}, bad)
    with pytest.raises(ValueError, match="latent_avg"):
        load_generator(bad)


def test_training_checkpoint_with_args_namespace(tmp_path: Path) -> None:
    """rosinality's train.py saves argparse args beside g_ema; that still loads weights-only."""
    import argparse

    path = tmp_path / "train.pt"
    torch.save({"g": _tiny_sd(), "g_ema": _tiny_sd(), "args": argparse.Namespace(size=8, lr=0.002)}, path)
    assert load_generator(path).size == 8


def test_sha256(tmp_path: Path) -> None:
    digest = file_sha256(CKPT)
    assert load_generator(CKPT, sha256=digest.upper()).size == 32
    wrong = "0" * 64
    with pytest.raises(ValueError, match=f"expected {wrong}, actual {digest}") as e:
        load_generator(CKPT, sha256=wrong)
    print("sha256 error:", e.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_generator(path)


def test_wrong_format(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "epoch": 3}, other)
    with pytest.raises(ValueError, match=r"no 'g_ema'.*\['epoch', 'state_dict'\]") as e:
        load_generator(other)
    print("wrong-format error:", e.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_generator(garbage)
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(ValueError, match="Tensor"):
        load_generator(tensor_only)


def test_pickled_objects_need_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"g_ema": _tiny_sd(), "extra": _Opaque()}, path)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_generator(path)
    with pytest.warns(UserWarning, match="full pickle"):
        assert load_generator(path, allow_pickle=True).size == 8


class _Opaque:
    pass


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_golden_on_cuda(io: dict[str, torch.Tensor]) -> None:
    gen = load_generator(CKPT, device="cuda")
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # full fp32
    try:
        with torch.no_grad():
            img, _ = gen([io["z"].cuda()], randomize_noise=False)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev
    _check("img_trunc1 (cuda)", img.cpu(), io["img_trunc1"])


# ---------------------------------------------------------------- seed -> z


@pytest.mark.parametrize("mode", ["normal", "truncated"])
def test_z_from_seed_deterministic_and_batch_independent(mode: str) -> None:
    a = z_from_seed(42, 512, mode)  # type: ignore[arg-type]
    assert a.shape == (512,) and a.dtype == torch.float32
    torch.manual_seed(123)  # global RNG state must not matter
    assert torch.equal(a, z_from_seed(42, 512, mode))  # type: ignore[arg-type]
    batch = z_batch([7, 42, 9], 512, mode)  # type: ignore[arg-type]
    assert batch.shape == (3, 512)
    assert torch.equal(batch[1], a)
    assert torch.equal(z_batch([42], 512, mode)[0], a)  # type: ignore[arg-type]
    assert not torch.equal(batch[0], batch[2])
    assert z_batch([], 512).shape == (0, 512)


def test_normal_mode_is_plain_randn() -> None:
    assert torch.equal(
        z_from_seed(5, 64, "normal"), torch.randn(64, generator=torch.Generator().manual_seed(5))
    )


@pytest.mark.parametrize("bound", [0.7, 0.3, 2.0])
def test_truncated_within_bounds(bound: float) -> None:
    z = z_batch(range(200), 512, "truncated", bound=bound)
    assert z.abs().max().item() <= bound
    # the truncated normal's spread: std of N(0,1) restricted to [-b, b]
    b = torch.tensor(bound, dtype=torch.float64)
    pdf = torch.exp(-b * b / 2) / (2 * torch.pi) ** 0.5
    mass = torch.special.ndtr(b) - torch.special.ndtr(-b)
    std = (1 - 2 * b * pdf / mass).sqrt().item()
    assert abs(z.std().item() - std) < 0.01 * std + 0.002
    assert abs(z.mean().item()) < 0.01


def test_latent_argument_checks() -> None:
    with pytest.raises(ValueError, match="mode"):
        z_from_seed(1, 8, "uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        z_from_seed(-1, 8)
    with pytest.raises(ValueError, match="bound"):
        z_from_seed(1, 8, "truncated", bound=0)
