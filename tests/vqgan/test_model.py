"""VQGAN port vs taming-transformers golden outputs, key manifest, loader errors, straight-through helpers."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from ganfolk.runtime.hashing import file_sha256
from services.vqgan import VQGAN, VQGANConfig, build_vqgan, load_vqgan
from services.vqgan.model import clamp_with_grad, replace_grad, vector_quantize_st
from tests.fixtures import golden

CKPT, YAML, IO = (
    golden.path("vqgan_tiny.ckpt"),
    golden.path("vqgan_tiny.yaml"),
    golden.path("vqgan_tiny_io.pt"),
)
KEYS_F16 = golden.path("vqgan_keys_f16_16384.json")
TOL = 5e-5


@pytest.fixture(scope="module")
def model() -> VQGAN:
    return load_vqgan(CKPT, YAML)


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return torch.load(IO, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def outputs(model: VQGAN, io: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        h = model.quant_conv(model.encoder(io["x"]))
        z_q, emb_loss, (_, _, indices) = model.quantize(h)
        z_rand_q, _, (_, _, indices_rand) = model.quantize(io["z_rand"])
        return {
            "h": h,
            "z_q": z_q,
            "emb_loss": emb_loss,
            "indices": indices,
            "dec": model.decoder(model.post_quant_conv(z_q)),
            "z_rand_q": z_rand_q,
            "indices_rand": indices_rand,
            "dec_rand": model.decode(z_rand_q),
        }


# ---------------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("key", ["h", "z_q", "emb_loss", "dec", "z_rand_q", "dec_rand"])
def test_golden_tensor(key: str, outputs: dict[str, torch.Tensor], io: dict[str, torch.Tensor]) -> None:
    got, ref = outputs[key], io[key]
    assert got.shape == ref.shape and got.dtype == ref.dtype
    err = (got - ref).abs().max().item()
    print(f"{key}: max abs err {err:.3g}")
    assert err <= TOL, f"{key}: max abs error {err:.3g} > {TOL}"


@pytest.mark.parametrize("key", ["indices", "indices_rand"])
def test_golden_indices_exact(
    key: str, outputs: dict[str, torch.Tensor], io: dict[str, torch.Tensor]
) -> None:
    got, ref = outputs[key], io[key]
    assert got.shape == ref.shape == (512,)  # flattened, like VectorQuantizer2 without sane_index_shape
    assert got.dtype == ref.dtype == torch.int64
    assert torch.equal(got, ref)


def test_taming_api(model: VQGAN, io: dict[str, torch.Tensor]) -> None:
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert isinstance(model.quantize.embedding, torch.nn.Embedding)
    assert model.quantize.embedding.weight.shape == (64, 16)
    with torch.no_grad():
        quant, emb_loss, info = model.encode(io["x"])
        perplexity, min_encodings, indices = info
        assert perplexity is None and min_encodings is None
        assert torch.equal(indices, io["indices"])
        assert (quant - io["z_q"]).abs().max() <= TOL
        assert (emb_loss - io["emb_loss"]).abs() <= TOL
        assert (model.decode(quant) - io["dec"]).abs().max() <= TOL
        from_codes = model.decode_code(io["indices"], (2, 16, 16))
        assert (from_codes - io["dec"]).abs().max() <= TOL
        dec, diff = model(io["x"])
        assert (dec - io["dec"]).abs().max() <= TOL and diff.shape == ()


def test_config_from_yaml() -> None:
    cfg = VQGANConfig.from_yaml(YAML)
    assert cfg == VQGANConfig(
        embed_dim=16,
        n_embed=64,
        ch=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(16,),
        resolution=32,
        z_channels=16,
    )
    assert isinstance(cfg.ch_mult, tuple) and isinstance(cfg.attn_resolutions, tuple)
    with pytest.raises(AttributeError):
        cfg.ch = 64  # type: ignore[misc]


def test_f16_16384_key_manifest() -> None:
    ref = json.loads(KEYS_F16.read_text())
    cfg = VQGANConfig(
        embed_dim=256,
        n_embed=16384,
        ch=128,
        ch_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        resolution=256,
        attn_resolutions=(16,),
        z_channels=256,
    )
    with torch.device("meta"):
        big = build_vqgan(cfg)
    got = [[k, list(v.shape)] for k, v in big.state_dict().items()]
    assert [k for k, _ in got] == [k for k, _ in ref]
    assert got == ref


def test_random_model_roundtrip_shapes() -> None:
    cfg = VQGANConfig(
        embed_dim=8,
        n_embed=32,
        ch=32,
        ch_mult=(1, 1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        resolution=32,
        z_channels=8,
    )
    torch.manual_seed(0)
    m = build_vqgan(cfg).eval()
    x = torch.rand(1, 3, 48, 32) * 2 - 1  # non-square, not the config's resolution
    with torch.no_grad():
        quant, _, (_, _, idx) = m.encode(x)
        assert quant.shape == (1, 8, 12, 8) and idx.shape == (96,)
        assert m.decode(quant).shape == x.shape


# ---------------------------------------------------------------------------------------------- loading


def _state_dict() -> dict[str, torch.Tensor]:
    return torch.load(CKPT, map_location="cpu", weights_only=True)["state_dict"]


def _same_weights(a: VQGAN, b: VQGAN) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loads_with_loss_keys_and_extras(tmp_path: Path, model: VQGAN) -> None:
    sd = _state_dict()
    sd["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)
    sd["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(64, 3, 3, 3)
    sd["loss.logvar"] = torch.zeros(())
    path = tmp_path / "with_loss.ckpt"
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 1000}, path)
    _same_weights(load_vqgan(path, YAML), model)


def test_loads_bare_state_dict(tmp_path: Path, model: VQGAN) -> None:
    path = tmp_path / "bare.pt"
    torch.save(_state_dict(), path)
    _same_weights(load_vqgan(path, YAML), model)


def test_lightning_checkpoint_with_unimportable_classes(tmp_path: Path, model: VQGAN) -> None:
    # A Lightning checkpoint pickles callback classes (pytorch_lightning.callbacks...), which neither
    # weights_only loading nor an environment without Lightning can resolve.
    fake = types.ModuleType("fake_lightning_callbacks")

    class ModelCheckpoint:
        def __init__(self) -> None:
            self.best = torch.tensor(0.5)

    ModelCheckpoint.__module__ = fake.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    fake.ModelCheckpoint = ModelCheckpoint  # type: ignore[attr-defined]
    sys.modules[fake.__name__] = fake
    try:
        obj: dict[str, Any] = {"state_dict": _state_dict(), "callbacks": {ModelCheckpoint: ModelCheckpoint()}}
        path = tmp_path / "last.ckpt"
        torch.save(obj, path)
    finally:
        del sys.modules[fake.__name__]
    with pytest.raises(ValueError, match="sha256"):
        load_vqgan(path, YAML)
    _same_weights(load_vqgan(path, YAML, sha256=file_sha256(path)), model)


def test_sha256_ok_and_mismatch() -> None:
    good = file_sha256(CKPT)
    assert load_vqgan(CKPT, YAML, device=torch.device("cpu"), sha256=good.upper()) is not None
    bad = "0" * 64
    with pytest.raises(ValueError) as e:
        load_vqgan(CKPT, YAML, sha256=bad)
    assert bad in str(e.value) and good in str(e.value) and "expected" in str(e.value)


def test_missing_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_vqgan(missing, YAML)
    missing_yaml = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match=str(missing_yaml)):
        load_vqgan(CKPT, missing_yaml)


def _yaml_with(tmp_path: Path, **changes: Any) -> Path:
    doc = yaml.safe_load(YAML.read_text())
    params = doc["model"]["params"]
    for k, v in changes.items():
        (params if k in ("embed_dim", "n_embed") else params["ddconfig"])[k] = v
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_mismatched_config_missing_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as e:
        load_vqgan(CKPT, _yaml_with(tmp_path, ch_mult=[1, 2, 2]))
    msg = str(e.value)
    assert "missing" in msg and "encoder.down.2" in msg and "ch_mult" in msg


def test_mismatched_config_unexpected_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as e:
        load_vqgan(CKPT, _yaml_with(tmp_path, attn_resolutions=[]))
    msg = str(e.value)
    assert "unexpected" in msg and ".attn." in msg and "attn_resolutions" in msg


def test_mismatched_config_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as e:
        load_vqgan(CKPT, _yaml_with(tmp_path, n_embed=128))
    msg = str(e.value)
    assert "shape mismatch" in msg and "quantize.embedding.weight" in msg and "'n_embed': 128" in msg


def test_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  target: taming.models.vqgan.GumbelVQ\n  params: {embed_dim: 1, n_embed: 1}\n")
    with pytest.raises(ValueError, match="GumbelVQ"):
        VQGANConfig.from_yaml(path)
    path.write_text("foo: 1\n")
    with pytest.raises(ValueError):
        VQGANConfig.from_yaml(path)


# ------------------------------------------------------------------------------------ straight-through


def test_vector_quantize_st_matches_quantizer_and_passes_grad(
    model: VQGAN, io: dict[str, torch.Tensor]
) -> None:
    codebook = model.quantize.embedding.weight
    z = io["h"].clone().requires_grad_(True)
    zq = vector_quantize_st(z, codebook)
    assert torch.equal(
        zq.detach(), model.quantize.embedding(io["indices"]).view(2, 16, 16, 16).permute(0, 3, 1, 2)
    )
    w = torch.randn_like(zq)
    (zq * w).sum().backward()
    assert z.grad is not None and torch.equal(z.grad, w)  # identity gradient
    assert codebook.grad is None

    # channels-last input, gradient to a trainable codebook stays off
    cb = codebook.detach().clone().requires_grad_(True)
    zl = io["h"].permute(0, 2, 3, 1).clone().requires_grad_(True)
    out = vector_quantize_st(zl, cb, dim=-1)
    assert torch.equal(out.detach().permute(0, 3, 1, 2), zq.detach())
    out.sum().backward()
    assert zl.grad is not None and torch.equal(zl.grad, torch.ones_like(zl)) and cb.grad is None


def test_vqgan_clip_style_loop_gradient(model: VQGAN, io: dict[str, torch.Tensor]) -> None:
    z = io["h"].clone().requires_grad_(True)
    img = clamp_with_grad(model.decode(vector_quantize_st(z, model.quantize.embedding.weight)), -1, 1)
    img.square().mean().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_replace_and_clamp_with_grad() -> None:
    x = torch.tensor([-2.0, 0.5, 2.0], requires_grad=True)
    y = clamp_with_grad(x, -1.0, 1.0)
    assert torch.equal(y.detach(), torch.tensor([-1.0, 0.5, 1.0]))
    # loss pulls every value down: blocked at -2 (pushes further out), passes at 0.5 and 2 (back in range)
    y.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0]))

    a = torch.zeros(3, requires_grad=True)
    b = torch.ones(1, requires_grad=True)
    out = replace_grad(a * 0 + 5.0, b)  # broadcast backward target
    assert torch.equal(out.detach(), torch.full((3,), 5.0))
    (out * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert a.grad is None and b.grad is not None and torch.equal(b.grad, torch.tensor([6.0]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_golden(io: dict[str, torch.Tensor]) -> None:
    m = load_vqgan(CKPT, YAML, device="cuda")
    assert m.quant_conv.weight.device.type == "cuda"
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32, so the CPU golden tolerance applies
    try:
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            quant, _, (_, _, idx) = m.encode(io["x"].cuda())
            dec = m.decode(io["z_q"].cuda()).cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    assert torch.equal(idx.cpu(), io["indices"])
    assert (quant.cpu() - io["z_q"]).abs().max() <= TOL
    assert (dec - io["dec"]).abs().max() <= TOL
