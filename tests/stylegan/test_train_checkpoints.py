"""Training checkpoints: rosinality's format, atomic saves with hashes, pruning, the run guard."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.storage import IntegrityError, ObjectStore
from services.stylegan.training.checkpoints import (
    RUN_FILE,
    CheckpointError,
    CheckpointOutput,
    checkpoint_name,
    latest,
    load_training_checkpoint,
    open_output,
)
from tests.fixtures import golden
from tests.fixtures.s3 import S3Server


def _fake_g(size: int) -> dict[str, torch.Tensor]:
    """The tensors GeneratorConfig.from_state_dict reads, at width 2 (enough to tell the resolution)."""
    sd = {"style.1.weight": torch.zeros(4, 4), "input.input": torch.zeros(1, 2, 4, 4)}
    for i in range(size.bit_length() - 3):
        sd[f"convs.{2 * i}.conv.weight"] = torch.zeros(1, 2, 2, 3, 3)
        sd[f"to_rgbs.{i}.conv.weight"] = torch.zeros(1, 3, 2, 1, 1)
    return sd


def _fake_d(size: int) -> dict[str, torch.Tensor]:
    sd = {"convs.0.0.weight": torch.zeros(2, 3, 1, 1), "final_linear.1.weight": torch.zeros(1, 2)}
    for i in range(1, size.bit_length() - 2):
        sd[f"convs.{i}.conv1.0.weight"] = torch.zeros(2, 2, 3, 3)
    return sd


def _optim() -> dict[str, Any]:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.002, betas=(0.0, 0.99))
    p.sum().backward()
    opt.step()
    return opt.state_dict()


def _ckpt(size: int = 32, **over: Any) -> dict[str, Any]:
    ckpt = {
        "g": _fake_g(size),
        "d": _fake_d(size),
        "g_ema": _fake_g(size),
        "g_optim": _optim(),
        "d_optim": _optim(),
        "args": {"size": size, "batch": 4, "augment": True},
        "ada_aug_p": 0.25,
    }
    return {**ckpt, **over}


def test_save_prune_latest_load_on_a_folder(tmp_path: Path) -> None:
    out = open_output(tmp_path / "run")
    assert out.latest() is None and out.claim("run-a") == "run-a"
    for it in (100, 200, 300, 400):
        ref = out.save(it, _ckpt(), keep=2)
    assert ref.iteration == 400 and ref.key == "000400.pt"
    kept = sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith("."))
    assert kept == ["000300.pt", "000300.pt.sha256", "000400.pt", "000400.pt.sha256", RUN_FILE]
    assert (
        tmp_path / "run/000400.pt.sha256"
    ).read_text() == f"{file_sha256(tmp_path / 'run/000400.pt')}  000400.pt\n"
    assert latest(tmp_path / "run") == ref == latest(f"file://{tmp_path}/run")
    assert json.loads((tmp_path / "run" / RUN_FILE).read_text())["run_id"] == "run-a"

    ckpt = out.load(ref, 32)
    assert ckpt["args"] == {"size": 32, "batch": 4, "augment": True} and ckpt["ada_aug_p"] == 0.25
    torch.testing.assert_close(ckpt["g_optim"]["state"][0]["exp_avg"], _optim()["state"][0]["exp_avg"])
    assert load_training_checkpoint(tmp_path / "run/000300.pt", 32)["args"]["batch"] == 4
    with pytest.raises(CheckpointError, match="32 px StyleGAN2 checkpoint but this run trains at 64 px"):
        load_training_checkpoint(tmp_path / "run/000400.pt", 64)

    # A checkpoint whose bytes no longer match its .sha256 is refused, not loaded.
    raw = (tmp_path / "run/000400.pt").read_bytes()
    (tmp_path / "run/000400.pt").write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(CheckpointError, match=r"does not match 000400\.pt\.sha256"):
        load_training_checkpoint(tmp_path / "run/000400.pt")
    with pytest.raises(IntegrityError):
        open_output(tmp_path / "run").load(ref)


def test_a_run_never_writes_into_another_runs_output(tmp_path: Path) -> None:
    first = open_output(tmp_path / "out")
    first.claim("run-a")
    first.save(10, _ckpt())
    with pytest.raises(CheckpointError, match="holds the checkpoints of run 'run-a'"):
        open_output(tmp_path / "out").claim("run-b")
    assert open_output(tmp_path / "out").claim("run-b", resume=True) == "run-a"  # resuming adopts run-a
    assert open_output(tmp_path / "out").claim("run-a") == "run-a"  # a restarted job of the same run
    with pytest.raises(CheckpointError, match="newer than iteration 5"):
        open_output(tmp_path / "out").claim("run-a", start_iteration=5)
    with pytest.raises(CheckpointError, match="newer than iteration 5"):
        first.save(5, _ckpt())

    # Another run that took the output over (its run.json replaced) stops this one's saves.
    first.store.put(RUN_FILE, json.dumps({"run_id": "run-c"}).encode())
    with pytest.raises(CheckpointError, match="taken over by run 'run-c'"):
        first.save(20, _ckpt())
    with pytest.raises(RuntimeError, match="claim"):
        open_output(tmp_path / "out").save(30, _ckpt())

    # Checkpoints without run.json (rosinality's own checkpoint/ folder): only resuming may use them.
    (tmp_path / "rosinality").mkdir()
    ns = _ckpt(args=argparse.Namespace(size=32, batch=8))
    del ns["ada_aug_p"]  # before ADA
    torch.save(ns, tmp_path / "rosinality" / checkpoint_name(5000))
    (tmp_path / "rosinality" / "005000.pt.sha256").write_text(
        f"{file_sha256(tmp_path / 'rosinality/005000.pt')}  005000.pt\n"
    )
    with pytest.raises(CheckpointError, match="unrecorded run"):
        open_output(tmp_path / "rosinality").claim("run-d")
    out = open_output(tmp_path / "rosinality")
    assert out.claim("run-d", resume=True) == "run-d"
    ref = out.latest()
    assert ref is not None and ref.iteration == 5000
    ckpt = out.load(ref, 32)
    assert ckpt["args"] == {"size": 32, "batch": 8} and ckpt["ada_aug_p"] == 0.0


def test_what_is_not_a_training_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"holds only a generator \(g_ema\)") as err:
        load_training_checkpoint(golden.path("stylegan2_tiny.pt"))
    assert isinstance(err.value, InvalidArgument)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_training_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"lacks \['g', 'd', 'g_ema', 'g_optim', 'd_optim'\]"):
        load_training_checkpoint(tmp_path / "other.pt")
    torch.save(_ckpt(d={"fc.weight": torch.zeros(1)}), tmp_path / "bad_d.pt")
    with pytest.raises(CheckpointError, match="'d' is not a StyleGAN2 state dict"):
        load_training_checkpoint(tmp_path / "bad_d.pt")
    torch.save(_ckpt(d=_fake_d(64)), tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="disagree on the resolution"):
        load_training_checkpoint(tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_training_checkpoint(tmp_path / "absent.pt")


def test_golden_networks_round_trip_on_s3(s3_store: ObjectStore, s3_server: S3Server, tmp_path: Path) -> None:
    g_ema = torch.load(golden.path("stylegan2_tiny.pt"), weights_only=True)["g_ema"]
    d = torch.load(golden.path("stylegan2_d_tiny.pt"), weights_only=True)["d"]
    bucket = s3_store.uri("x").split("/")[2]
    out = open_output(f"s3://{bucket}/runs/faces", store=s3_store)
    out.claim("run-s3", info={"size": 32})
    for it in (1, 2, 3):
        out.save(it, _ckpt(g=g_ema, g_ema=g_ema, d=d, ada_aug_p=0.1 * it), keep=2, tmp_dir=tmp_path)
    assert [k.key for k in s3_store.list("runs/faces/")] == [
        "runs/faces/000002.pt",
        "runs/faces/000002.pt.sha256",
        "runs/faces/000003.pt",
        "runs/faces/000003.pt.sha256",
        f"runs/faces/{RUN_FILE}",
    ]
    # The same output named by a store URL (credentials in it), as a CLI flag would.
    url = f"http://{s3_server.access_key}:{s3_server.secret_key}@{s3_server.endpoint}/{bucket}/runs/faces"
    ref = latest(url)
    assert ref is not None and ref.iteration == 3
    ckpt = load_training_checkpoint(ref.uri, 32, store=s3_store)
    assert ckpt["ada_aug_p"] == pytest.approx(0.3)
    torch.testing.assert_close(ckpt["g_ema"]["style.1.weight"], g_ema["style.1.weight"])
    with pytest.raises(CheckpointError, match="this run trains at 256 px"):
        open_output(url).load(ref, 256)
    with pytest.raises(CheckpointError, match="no object store"):
        open_output(f"s3://{bucket}/runs/faces")
    assert isinstance(open_output(f"s3://{bucket}", store=s3_store), CheckpointOutput)
