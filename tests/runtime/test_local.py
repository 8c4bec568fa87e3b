"""The local stack launcher: `ganfolk up` / `status` / `down` with real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc

from ganfolk.v1 import stylegan_pb2, stylegan_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def ganfolk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ganfolk.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=240
    )


def test_up_status_down(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    up = ganfolk("up", "stylegan", "--state-dir", state, "--allow-random-weights", "--store", "s3")
    try:
        assert up.returncode == 0, up.stderr
        assert "stylegan" in up.stdout
        again = ganfolk("up", "stylegan", "--state-dir", state)
        assert again.returncode == 2 and "already running" in again.stderr
        status = ganfolk("status", "--state-dir", state)
        assert status.returncode == 0, status.stdout
        assert "SERVING" in status.stdout
        port = next(line.split()[3] for line in up.stdout.splitlines() if line.strip().startswith("stylegan"))
        with grpc.insecure_channel(port) as channel:
            reply = stylegan_pb2_grpc.StyleGANServiceStub(channel).Sample(
                stylegan_pb2.SampleRequest(seed_list=stylegan_pb2.SeedList(seeds=[1]))
            )
        assert reply.samples[0].image.uri.startswith("s3://ganfolk/")
        assert reply.provenance.models[0].random_weights
    finally:
        down = ganfolk("down", "--state-dir", state)
    assert down.returncode == 0
    assert "stylegan: stopped" in down.stdout and "nats-server: stopped" in down.stdout
    assert ganfolk("status", "--state-dir", state).returncode == 1


def test_unknown_service_is_a_clear_error(tmp_path: Path) -> None:
    result = ganfolk("serve", "nosuch")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_service_without_weights_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ganfolk.cli", "serve", "stylegan", "--port", "0", "--no-worker"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "GANFOLK_STORE_URL": str(tmp_path / "objects")},
    )
    assert result.returncode == 2
    assert "GANFOLK_STYLEGAN_CHECKPOINT is required" in result.stderr
