"""The service table is the one source of ports, modules, node types and stages."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from ganfolk import local
from ganfolk.runtime import catalog
from ganfolk.runtime.jetstream import StagePolicy
from ganfolk.runtime.service import (
    check_stages,
    load_definition,
    policy_from_settings,
    service_settings,
)
from ganfolk.runtime.settings import ConfigError, Settings
from ganfolk.runtime.worker import StageHandler
from ganfolk.v1 import stylegan_pb2

ROOT = Path(__file__).resolve().parents[2]


def served_stages(name: str) -> list[str]:
    """Stages a service's workers register, built without loading a model."""
    definition = load_definition(name)
    handlers = definition.stages(object(), None, service_settings(definition))
    return [h.stage for h in handlers]


def test_readme_service_table_is_rendered_from_the_catalog() -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- services:begin -->\n(.*?)\n<!-- services:end -->", readme, re.S)
    assert found, "README.md needs the service table between <!-- services:begin/end --> markers"
    assert found.group(1).strip() == catalog.markdown_table(), (
        "README's service table is stale: paste `python -m ganfolk.runtime.catalog` between the markers"
    )


@pytest.mark.parametrize("name", list(catalog.SERVICES))
def test_each_service_serves_exactly_the_catalog_stages(name: str) -> None:
    definition = load_definition(name)
    assert definition.name == name
    assert sorted(served_stages(name)) == sorted(catalog.entry(name).stages)


def test_every_stage_the_coordinator_dispatches_has_a_handler() -> None:
    from services.coordinator import pipeline

    handled = {stage for name in catalog.SERVICES for stage in served_stages(name)}
    dispatched = {d.task for d in pipeline.STAGES.values()}
    assert dispatched, "the coordinator dispatches no stage?"
    assert dispatched <= handled, f"no service handles {sorted(dispatched - handled)}"


def test_ports_and_modules_are_unique() -> None:
    entries = list(catalog.SERVICES.values())
    assert len({e.port for e in entries}) == len(entries)
    assert len({e.module for e in entries}) == len(entries)
    assert {e.node for e in entries} <= {"CPU", "GPU", "GPU/CPU"}


def test_a_stage_belongs_to_one_service() -> None:
    stages = [s for e in catalog.SERVICES.values() for s in e.stages]
    assert len(stages) == len(set(stages))
    assert catalog.service_for("sample") == "stylegan"
    with pytest.raises(ValueError):
        catalog.service_for("nope")


def test_service_port_comes_from_the_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GANFOLK_GRPC_PORT", raising=False)
    for name, e in catalog.SERVICES.items():
        assert service_settings(load_definition(name)).grpc_port == e.port
    monkeypatch.setenv("GANFOLK_GRPC_PORT", "41234")
    assert service_settings(load_definition("clip")).grpc_port == 41234
    assert service_settings(load_definition("clip"), grpc_port=0).grpc_port == 0


def test_unknown_service_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown service 'nope'"):
        load_definition("nope")
    with pytest.raises(KeyError, match="choose one of"):
        catalog.entry("nope")


def test_a_stage_the_catalog_does_not_list_stops_start_up() -> None:
    async def handle(request: Any, ctx: Any) -> Any:
        return request

    stray = StageHandler("sampel", stylegan_pb2.SampleRequest, handle, "sample")
    with pytest.raises(ConfigError, match="sampel"):
        check_stages("stylegan", [stray])


def test_deployment_overrides_reach_every_stage_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANFOLK_TASK_MAX_ACK_PENDING", "512")
    monkeypatch.setenv("GANFOLK_TASK_ACK_WAIT_S", "45")
    policy = policy_from_settings(StagePolicy(ack_wait=120, max_ack_pending=64), Settings())
    assert (policy.max_ack_pending, policy.ack_wait) == (512, 45)
    monkeypatch.delenv("GANFOLK_TASK_MAX_ACK_PENDING")
    monkeypatch.delenv("GANFOLK_TASK_ACK_WAIT_S")
    assert policy_from_settings(StagePolicy(max_ack_pending=64), Settings()).max_ack_pending == 64


def test_services_declare_their_local_side_processes(tmp_path: Path) -> None:
    sides = {s.setting: s for s in local.side_processes(list(catalog.SERVICES))}
    assert set(sides) == {"GANFOLK_TEXT_LLM_BASE_URL", "GANFOLK_MINT_RPC_URL"}
    for name in ("text", "mint"):
        fields = load_definition(name).settings_cls.model_fields
        for side in load_definition(name).side_processes:
            assert side.setting.removeprefix("GANFOLK_").lower() in fields
    llm = sides["GANFOLK_TEXT_LLM_BASE_URL"]
    assert llm.url(8088) == "http://127.0.0.1:8088/v1"
    assert llm.command(8088, tmp_path)[-2:] == ["--port", "8088"]
    assert local.side_processes(["stylegan", "clip"]) == []


def test_the_runtime_imports_no_service() -> None:
    """The runtime, the launcher and the client name services only through the catalog.

    The ``ganfolk`` command itself may hand a subcommand to a service's package (``train``,
    ``dataset``, ``contract``): that is the application layer, not the runtime.
    """
    offenders = []
    paths = [*(ROOT / "ganfolk" / "runtime").rglob("*.py"), ROOT / "ganfolk" / "local.py"]
    for path in [*paths, ROOT / "ganfolk" / "client.py", *(ROOT / "ganfolk" / "weights").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "services"]
    assert not offenders, offenders
