"""RRDBNet port vs the golden BasicSR output, the x4plus key manifest, checkpoint formats, tiling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganfolk.runtime.hashing import file_sha256
from services.upscale import RRDBNetConfig, load_rrdbnet
from services.upscale.rrdbnet import RRDBNet, pixel_unshuffle, upscale_tiled, upscale_tiled_uint8
from tests.fixtures import golden

GOLDEN = golden.GOLDEN
CKPT = golden.path("rrdbnet_tiny.pth")
IO = golden.path("rrdbnet_tiny_io.pt")
TINY = RRDBNetConfig(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, num_grow_ch=4, scale=4)


@pytest.fixture(scope="module")
def tiny() -> RRDBNet:
    return load_rrdbnet(CKPT)


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return torch.load(IO, map_location="cpu", weights_only=True)


def _random_model(config: RRDBNetConfig, seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(config).eval().requires_grad_(False)


# ---------------------------------------------------------------- golden output


def test_golden_output(tiny: RRDBNet, io: dict[str, torch.Tensor]) -> None:
    assert tiny.config == TINY
    assert not tiny.training
    with torch.no_grad():
        y = tiny(io["x"])
    assert y.shape == io["y"].shape == (1, 3, 64, 64)
    err = (y - io["y"]).abs().max().item()
    print(f"rrdbnet_tiny golden max abs error: {err:.3g} (bar 5e-5)")
    assert err <= 5e-5


def test_golden_through_tiling(tiny: RRDBNet, io: dict[str, torch.Tensor]) -> None:
    # 16x16 input, tile 8 overlap 20 (>= the receptive field): same as the reference output
    y = upscale_tiled(tiny, io["x"], tile=8, overlap=20)
    err = (y - io["y"]).abs().max().item()
    print(f"rrdbnet_tiny golden via 4 tiles, max abs error: {err:.3g}")
    assert err <= 5e-5


# ---------------------------------------------------------------- architecture / manifest


def test_x4plus_manifest_matches_exactly() -> None:
    manifest = json.loads((GOLDEN / "rrdbnet_keys_x4plus.json").read_text())
    with torch.device("meta"):
        model = RRDBNet(RRDBNetConfig())  # defaults are x4plus: 3, 3, 64, 23, 32, 4
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == manifest  # same keys, same order, same shapes
    assert len(ours) == 2 + 23 * 3 * 5 * 2 + 10
    # and the config is inferred back from the shapes
    assert RRDBNetConfig.from_state_dict(model.state_dict()) == RRDBNetConfig()


@pytest.mark.parametrize(
    "config",
    [
        RRDBNetConfig(3, 3, 16, 2, 8, 2),  # like RealESRGAN_x2plus (conv_first takes 12 channels)
        RRDBNetConfig(3, 3, 16, 3, 8, 1),
        RRDBNetConfig(1, 1, 8, 1, 4, 4),
        RRDBNetConfig(3, 3, 64, 6, 32, 4),  # like RealESRGAN_x4plus_anime_6B
    ],
)
def test_config_inferred_from_shapes(config: RRDBNetConfig) -> None:
    with torch.device("meta"):
        sd = RRDBNet(config).state_dict()
    assert RRDBNetConfig.from_state_dict(sd) == config


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="scale must be one of 1, 2, 4"):
        RRDBNetConfig(scale=3)
    with pytest.raises(ValueError, match="num_feat must be a positive integer"):
        RRDBNetConfig(num_feat=0)


def test_pixel_unshuffle_matches_torch() -> None:
    x = torch.randn(2, 3, 8, 12)
    for factor in (2, 4):
        assert torch.equal(pixel_unshuffle(x, factor), F.pixel_unshuffle(x, factor))
    with pytest.raises(ValueError, match="divisible"):
        pixel_unshuffle(torch.zeros(1, 3, 5, 4), 2)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_output_shape_per_scale(scale: int) -> None:
    model = _random_model(RRDBNetConfig(3, 3, 8, 1, 4, scale))
    with torch.no_grad():
        y = model(torch.rand(1, 3, 16, 20))
    assert y.shape == (1, 3, 16 * scale, 20 * scale)


# ---------------------------------------------------------------- checkpoint formats and errors


@pytest.mark.parametrize("wrapper", ["params", "bare"])
def test_params_and_bare_state_dicts_load(
    tmp_path: Path, tiny: RRDBNet, io: dict[str, torch.Tensor], wrapper: str
) -> None:
    sd = torch.load(CKPT, map_location="cpu", weights_only=True)["params_ema"]
    path = tmp_path / f"{wrapper}.pth"
    torch.save({"params": sd} if wrapper == "params" else sd, path)
    model = load_rrdbnet(path)
    assert model.config == TINY
    with torch.no_grad():
        assert torch.equal(model(io["x"]), tiny(io["x"]))


def test_params_ema_preferred_over_params(tmp_path: Path, tiny: RRDBNet, io: dict[str, torch.Tensor]) -> None:
    sd = torch.load(CKPT, map_location="cpu", weights_only=True)["params_ema"]
    other = {k: v + 1.0 for k, v in sd.items()}
    path = tmp_path / "both.pth"
    torch.save({"params": other, "params_ema": sd}, path)
    with torch.no_grad():
        assert torch.equal(load_rrdbnet(path)(io["x"]), tiny(io["x"]))


def test_sha256_checked(tmp_path: Path) -> None:
    actual = file_sha256(CKPT)
    sums = (GOLDEN / "SHA256SUMS").read_text()
    assert f"{actual}  rrdbnet_tiny.pth" in sums
    model = load_rrdbnet(CKPT, sha256=actual.upper())
    assert model.sha256 == actual
    wrong = "0" * 64
    with pytest.raises(ValueError, match="sha256 mismatch") as err:
        load_rrdbnet(CKPT, sha256=wrong)
    assert wrong in str(err.value) and actual in str(err.value)


def test_missing_file_named(tmp_path: Path) -> None:
    missing = tmp_path / "RealESRGAN_x4plus.pth"
    with pytest.raises(FileNotFoundError, match=re.escape("RealESRGAN_x4plus.pth")):
        load_rrdbnet(missing)


def test_not_an_rrdbnet_file_lists_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2)}, "latent_avg": torch.zeros(4)}, path)
    with pytest.raises(ValueError, match="not an RRDBNet checkpoint") as err:
        load_rrdbnet(path)
    assert "'g_ema'" in str(err.value) and "'latent_avg'" in str(err.value)

    text = tmp_path / "notes.pth"
    text.write_text("definitely not a checkpoint")
    with pytest.raises(ValueError, match=re.escape("torch.load failed")):
        load_rrdbnet(text)


def test_strict_keys(tmp_path: Path) -> None:
    sd = dict(torch.load(CKPT, map_location="cpu", weights_only=True)["params_ema"])
    extra = dict(sd, **{"conv_extra.weight": torch.zeros(1)})
    torch.save({"params_ema": extra}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=re.escape("conv_extra.weight")):
        load_rrdbnet(tmp_path / "extra.pth")
    missing = {k: v for k, v in sd.items() if k != "conv_hr.bias"}
    torch.save({"params_ema": missing}, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=re.escape("conv_hr.bias")):
        load_rrdbnet(tmp_path / "missing.pth")


# ---------------------------------------------------------------- tiling


def test_tiled_matches_untiled(tiny: RRDBNet) -> None:
    torch.manual_seed(11)
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        full = tiny(x)
    small_overlap = (upscale_tiled(tiny, x, tile=8, overlap=4) - full).abs().max().item()
    wide_overlap = (upscale_tiled(tiny, x, tile=8, overlap=20) - full).abs().max().item()
    print(
        f"tiled vs untiled, 24x24 input, tile 8: overlap 4 max abs diff {small_overlap:.3g}, "
        f"overlap 20 {wide_overlap:.3g} (output range ~{full.abs().max().item():.3g})"
    )
    # measured: 5.4e-6 with overlap 4 (seams where the receptive field is cut),
    # 0 once the overlap covers the ~19 px receptive field
    assert small_overlap <= 2e-5
    assert wide_overlap <= 1e-6
    # one tile: exactly the untiled path
    assert torch.equal(upscale_tiled(tiny, x, tile=24, overlap=4), full)


@pytest.mark.parametrize("scale", [1, 2])
def test_tiled_unshuffle_models_odd_sizes(scale: int) -> None:
    model = _random_model(RRDBNetConfig(3, 3, 8, 1, 4, scale), seed=scale)
    x = torch.rand(1, 3, 21, 27)
    full = upscale_tiled(model, x, tile=64)  # one tile, reflect-padded to a multiple of 4 / scale
    tiled = upscale_tiled(model, x, tile=8, overlap=24)
    assert full.shape == tiled.shape == (1, 3, 21 * scale, 27 * scale)
    assert (tiled - full).abs().max().item() <= 1e-5


def test_tiling_bounds_the_model_input() -> None:
    model = _random_model(TINY)
    seen: list[tuple[int, int]] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    x = torch.rand(1, 3, 64, 80)
    y = upscale_tiled(model, x, tile=16, overlap=4)
    assert y.shape == (1, 3, 256, 320)
    assert len(seen) == 4 * 5
    assert max(h for h, _ in seen) <= 16 + 2 * 4 and max(w for _, w in seen) <= 16 + 2 * 4


def test_tiled_keeps_dtype_and_rejects_bad_args() -> None:
    model = _random_model(TINY)
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    y = upscale_tiled(model, x, tile=4, overlap=2)
    assert y.dtype == torch.float64 and y.shape == (2, 3, 40, 40)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        upscale_tiled(model, torch.rand(3, 10, 10))
    with pytest.raises(ValueError, match="tile must be"):
        upscale_tiled(model, x, tile=0)


@pytest.mark.parametrize(("scale", "size", "tile"), [(4, (37, 50), 16), (4, (20, 20), 64), (2, (21, 27), 8)])
def test_uint8_tiles_equal_the_rounded_float_output(scale: int, size: tuple[int, int], tile: int) -> None:
    """Tiles pasted straight into a uint8 image give the pixels of the float path, rounded."""
    model = _random_model(RRDBNetConfig(3, 3, 8, 1, 4, scale), seed=scale)
    img = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    x = torch.from_numpy(img.astype(np.float32) / np.float32(255.0)).permute(2, 0, 1).unsqueeze(0)
    want = upscale_tiled(model, x, tile=tile, overlap=8)[0].clamp(0, 1).mul(255).round().to(torch.uint8)
    got = upscale_tiled_uint8(model, img, tile=tile, overlap=8)
    assert got.dtype == np.uint8 and got.shape == (size[0] * scale, size[1] * scale, 3)
    assert np.array_equal(got, want.permute(1, 2, 0).numpy())
