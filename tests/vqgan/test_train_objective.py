"""taming's VQGAN objective: golden discriminator and losses, the loss.* layout, the adaptive weight."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from services.vqgan.training import (
    LPIPS,
    LossConfig,
    LPIPSError,
    NLayerDiscriminator,
    VQLoss,
    adaptive_weight,
    calculate_adaptive_weight,
    hinge_d_loss,
    lpips_state_from,
    vanilla_d_loss,
)
from tests.fixtures import golden

TOL = 5e-5


def test_discriminator_matches_taming_golden() -> None:
    ref = torch.load(golden.path("taming_disc_tiny.pt"), weights_only=True)
    io = torch.load(golden.path("taming_disc_tiny_io.pt"), weights_only=True)
    d = NLayerDiscriminator(3, ndf=ref["ndf"], n_layers=ref["n_layers"])
    d.load_state_dict(ref["discriminator"], strict=True)
    d.eval()
    with torch.no_grad():
        lx, ly = d(io["x"]), d(io["y"])
    assert lx.shape == io["logits_x"].shape == (2, 1, 6, 6)
    assert (lx - io["logits_x"]).abs().max() < TOL
    assert (ly - io["logits_y"]).abs().max() < TOL
    assert abs(float(hinge_d_loss(lx, ly)) - float(io["hinge_d_loss"])) < TOL
    assert abs(float(vanilla_d_loss(lx, ly)) - float(io["vanilla_d_loss"])) < TOL
    # The losses of the stored logits themselves, exactly as taming computed them.
    assert abs(float(hinge_d_loss(io["logits_x"], io["logits_y"])) - float(io["hinge_d_loss"])) < 1e-6


def test_loss_state_dict_has_the_layout_of_a_real_checkpoint() -> None:
    expected = [(k, tuple(s)) for k, s in json.loads(golden.path("vqgan_loss_keys_f16.json").read_text())]
    with torch.device("meta"):
        loss = VQLoss(LossConfig(disc_num_layers=3, disc_ndf=64))
    holder = nn.Module()
    holder.loss = loss
    got = [(k, tuple(v.shape)) for k, v in holder.state_dict().items()]
    assert got == expected
    # ... and a state dict in that layout loads unchanged.
    small = VQLoss(LossConfig(disc_num_layers=2, disc_ndf=8))
    sd = {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in small.state_dict().items()}
    small.load_state_dict(sd, strict=True)


def test_lossconfig_from_taming_yaml_and_refusals() -> None:
    import yaml

    doc = yaml.safe_load(golden.path("vqgan_tiny.yaml").read_text())
    cfg = LossConfig.from_taming(doc["model"]["params"]["lossconfig"])
    assert (cfg.disc_start, cfg.disc_weight, cfg.codebook_weight, cfg.disc_loss) == (10000, 0.8, 1.0, "hinge")
    assert LossConfig.from_taming(cfg.as_taming()) == cfg
    with pytest.raises(ValueError, match="use_actnorm"):
        LossConfig(use_actnorm=True)
    with pytest.raises(ValueError, match="disc_loss"):
        LossConfig(disc_loss="wgan")
    with pytest.raises(ValueError, match="not understood"):
        LossConfig.from_taming({"params": {"disc_start": 1, "typo_weight": 2}})


def test_adaptive_weight_on_a_hand_checked_case() -> None:
    # A "last layer" w (2 values), nll = 3 w0 + 4 w1 (gradient (3, 4), norm 5) and g = w0 (norm 1):
    # d_weight = 5 / (1 + 1e-4) * disc_weight.
    w = torch.tensor([0.5, -1.0], requires_grad=True)
    nll, g = 3 * w[0] + 4 * w[1], w[0] * 1.0
    got = calculate_adaptive_weight(nll, g, w, disc_weight=0.8)
    assert got.item() == pytest.approx(5 / (1 + 1e-4) * 0.8, rel=1e-6)
    assert not got.requires_grad
    # Clamped at 1e4 when the adversarial gradient vanishes.
    assert adaptive_weight(torch.tensor([3.0, 4.0]), torch.zeros(2), 1.0).item() == pytest.approx(1e4)
    # On a real decoder layer it is ‖∇nll‖ / (‖∇g‖ + 1e-4) of the autograd gradients.
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, 3, padding=1)
    h = torch.randn(2, 4, 8, 8)
    xrec, x = conv(h), torch.randn(2, 3, 8, 8)
    d = NLayerDiscriminator(3, 8, 1)
    nll, g = (x - xrec).abs().mean(), -d(xrec).mean()
    gn = torch.autograd.grad(nll, conv.weight, retain_graph=True)[0].norm()
    gg = torch.autograd.grad(g, conv.weight, retain_graph=True)[0].norm()
    assert calculate_adaptive_weight(nll, g, conv.weight, 1.0).item() == pytest.approx(
        (gn / (gg + 1e-4)).item(), rel=1e-6
    )


def random_lpips(seed: int = 0) -> LPIPS:
    torch.manual_seed(seed)
    net = LPIPS()
    sd = {
        k: v if k.startswith("scaling_layer.") else torch.randn_like(v) * 0.05
        for k, v in net.state_dict().items()
    }
    return net.load(sd, "random test weights")


def test_lpips_is_zero_on_equal_images_and_frozen() -> None:
    net = random_lpips()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert net(x, x).abs().max() == 0
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    d = net(x, y)
    assert d.shape == (2, 1, 1, 1) and (d != 0).all()
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training  # dropout stays off: the loss is deterministic


def test_lpips_sources_and_refusals() -> None:
    net = random_lpips(1)
    sd = net.state_dict()
    # A taming checkpoint's loss.perceptual_loss.* ...
    ckpt = {f"loss.perceptual_loss.{k}": v for k, v in sd.items()} | {
        "encoder.conv_in.weight": torch.zeros(1)
    }
    assert lpips_state_from([("ckpt", ckpt)]).keys() == sd.keys()
    # ... or torchvision's vgg16 features plus taming's lin-only vgg.pth.
    tv = {f"features.{k.split('.')[2]}.{k.split('.')[3]}": v for k, v in sd.items() if k.startswith("net.")}
    tv["classifier.0.weight"] = torch.zeros(1)
    lins = {k: v for k, v in sd.items() if k.startswith("lin")}
    merged = lpips_state_from([("vgg16.pth", tv), ("vgg.pth", lins)])
    fresh = LPIPS().load(merged, "vgg16 + vgg.pth")
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert torch.equal(fresh(x, y), net(x, y))
    with pytest.raises(LPIPSError, match="missing"):
        LPIPS().load(lpips_state_from([("vgg.pth", lins)]), "vgg.pth")
