"""`ganfolk up` / `status` / `down`: the launcher starts what the chosen services declare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ganfolk import local


def test_up_starts_the_side_processes_a_service_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GANFOLK_MINT_RPC_URL", raising=False)
    state = tmp_path / "stack"
    stack = local.up(["mint"], state_dir=str(state), timeout=120)
    try:
        names = [p.name for p in stack.processes]
        # The broker first, the dev chain mint declared, then the service itself.
        assert names == ["nats-server", "anvil", "mint"]
        report, healthy = local.status(state_dir=str(state))
        assert healthy, report
        assert json.loads((state / "stack.json").read_text())["nats_url"] == stack.nats_url
    finally:
        print(local.down(state_dir=str(state)))
    assert not any(local._alive(p.pid) for p in stack.processes)
    assert local.status(state_dir=str(state)) == ("no stack is running", False)


def test_up_refuses_a_service_that_is_not_in_the_catalog(tmp_path: Path) -> None:
    with pytest.raises(local.ConfigError, match="not part of this build: nope"):
        local.up(["nope"], state_dir=str(tmp_path))
