"""VQGAN fine-tuning end to end on the CPU: outputs taming and the service read, learning, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.hashing import file_sha256
from services.vqgan import load_vqgan
from services.vqgan.training import run
from services.vqgan.training.checkpoints import open_vq_output
from services.vqgan.training.loop import evaluate, split
from tests.fixtures import golden
from tests.vqgan.conftest import Models
from tests.vqgan.train_fixtures import CKPT, Setup, make_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return make_setup(tmp_path_factory.mktemp("vqtrain"))


@pytest.fixture(scope="module")
def trained(setup: Setup) -> Path:
    # The discriminator on from step 2: both optimisers and the adaptive weight take part.
    assert run.worker(setup.config("trained", steps=6, disc_start=2, keep=2)) == 0
    return setup.root / "trained"


def test_run_writes_taming_checkpoints_with_yaml_hash_and_grid(trained: Path) -> None:
    names = sorted(p.name for p in trained.iterdir() if not p.name.startswith("."))
    # keep=2: the step-2 checkpoint, its yaml and its grid were pruned.
    assert names == [
        "000004.ckpt", "000004.ckpt.sha256", "000004.png", "000004.yaml",
        "000006.ckpt", "000006.ckpt.sha256", "000006.png", "000006.yaml", "run.json",
    ]  # fmt: skip
    ckpt = trained / "000006.ckpt"
    assert (trained / "000006.ckpt.sha256").read_text().split()[0] == file_sha256(ckpt)
    obj = torch.load(ckpt, weights_only=True)
    assert obj["global_step"] == 6 and len(obj["optimizer_states"]) == 2
    keys = [k for k in obj["state_dict"] if k.startswith("loss.")]
    # The loss.* layout of a real taming checkpoint (at the tiny config's discriminator size).
    layout = [k for k, _ in json.loads(golden.path("vqgan_loss_keys_f16.json").read_text())]
    assert keys == layout
    assert obj["ganfolk"]["metrics"].keys() == {"psnr", "perplexity", "codebook_usage"}
    doc = yaml.safe_load((trained / "000006.yaml").read_text())
    assert doc["model"]["target"] == "taming.models.vqgan.VQModel"
    assert doc["model"]["params"]["lossconfig"]["params"]["disc_start"] == 2
    grid = np.asarray(Image.open(trained / "000006.png"))
    assert grid.shape == (2 * 32, 4 * 32, 3)  # 4 held-out pairs, input | reconstruction, 2 a row
    model = load_vqgan(ckpt, trained / "000006.yaml")
    assert not torch.equal(
        model.decoder.conv_out.weight,
        load_vqgan(CKPT, golden.path("vqgan_tiny.yaml")).decoder.conv_out.weight,
    )


def test_refine_runs_on_the_produced_checkpoint(trained: Path, models: Models) -> None:
    from services.vqgan.core import load_core
    from services.vqgan.refine import Prompt, RefineParams

    ckpt = trained / "000006.ckpt"
    settings = models.settings(
        vqgan_checkpoint=str(ckpt),
        vqgan_config=str(trained / "000006.yaml"),
        vqgan_checkpoint_sha256=file_sha256(ckpt),
    )
    core = load_core(settings)
    result = core.refine(None, [Prompt("a portrait")], RefineParams(size=32, iterations=2, cutn=2))
    assert result.image.shape == (32, 32, 3)


def test_check_prints_the_plan(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup.config("planned", batch=3, gpus=2)
    assert run.main([*cfg.to_argv(), "--check"]) == 0
    out = capsys.readouterr().out
    assert "lr 2.7e-05 (= 4.5e-06 x 3 x 2)" in out and "4 held out" in out
    # --base-lr replaces the yaml's base_learning_rate, and the yaml written beside checkpoints says so.
    cfg = setup.config("planned-lr", base_lr=1e-4)
    assert run.main([*cfg.to_argv(), "--check"]) == 0
    assert "lr 0.0002 (= 0.0001 x 2 x 1)" in capsys.readouterr().out
    spec = run.plan(cfg, load_weights=False).spec
    assert yaml.safe_load(spec.yaml())["model"]["base_learning_rate"] == 1e-4


def _tiny_yaml(tmp: Path, **changes: Any) -> Path:
    doc = yaml.safe_load(golden.path("vqgan_tiny.yaml").read_text())
    doc["model"]["params"]["ddconfig"].update(changes)
    path = tmp / "other.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_bad_input_is_refused_before_training(setup: Setup, tmp_path: Path) -> None:
    # An architecture that is not --init's.
    with pytest.raises(InvalidArgument, match="does not match the model of --config"):
        run.plan(setup.config("bad1", config=str(_tiny_yaml(tmp_path, ch=64))))
    # Fewer training images than one global batch.
    with pytest.raises(InvalidArgument, match="fewer than one batch"):
        run.plan(setup.config("bad2", batch=7, gpus=2))
    # No LPIPS anywhere.
    with pytest.raises(InvalidArgument, match="no LPIPS weights"):
        run.plan(setup.config("bad3", lpips=[]))
    with pytest.raises(InvalidArgument, match="no LPIPS weights"):
        run.plan(setup.config("bad4", init="", lpips=[]))
    # Images smaller than the model's resolution.
    small = tmp_path / "small"
    small.mkdir()
    for i in range(12):
        Image.new("RGB", (32 if i else 16, 32 if i else 16), (i * 20, 0, 0)).save(small / f"{i}.png")
    with pytest.raises(InvalidArgument, match=r"smaller than the model's 32 px resolution \(0.png\)"):
        run.plan(setup.config("bad5", data=str(small)))
    # A missing init checkpoint.
    with pytest.raises(InvalidArgument, match="not found"):
        run.plan(setup.config("bad6", init=str(tmp_path / "nope.ckpt")))
    assert not list(setup.root.glob("bad*/*.ckpt"))


def test_training_raises_heldout_psnr(tmp_path: Path) -> None:
    # The golden tiny model has random weights (held-out PSNR ~10 dB, worse than flat grey). Its decoder
    # ends in GroupNorm(32) over 32 channels -- a per-channel instance norm -- so a flat background's
    # colour survives only through the map's shape and is learned slowly: 44 training discs cover the
    # colour cube well enough that the 4 unseen ones come out right within 400 steps (measured: 10.05 ->
    # 14.04 dB; 16 discs reach only ~+2 dB). The discriminator keeps the yaml's late disc_start, as a
    # taming run this short would; the other tests here exercise it.
    s = make_setup(tmp_path, images=48)
    cfg = s.config("learn", steps=400, batch=4, base_lr=2.5e-4, snapshot_every=400, log_every=100)
    before, _ = evaluate(load_vqgan(CKPT, golden.path("vqgan_tiny.yaml")), _held(s, cfg), 4)
    assert run.worker(cfg) == 0
    out = open_vq_output(cfg.out)
    after = out.load(out.latest())["ganfolk"]["metrics"]
    assert after["psnr"] >= before["psnr"] + 3.0, (before, after)


def _held(setup: Setup, cfg: Any) -> torch.Tensor:
    from services.stylegan.training.data import ImageDataset, prepare_dataset

    info = prepare_dataset(cfg.data, 32, cfg.cache_dir)
    ds = ImageDataset(info)
    return torch.stack([ds[i] for i in split(len(ds), cfg.holdout, cfg.seed)[1]])
