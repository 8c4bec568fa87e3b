"""`ganfolk up` / `status` / `down`: the launcher starts what the chosen services declare."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import nats
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


def test_up_runs_nats_with_a_user_per_service_and_local_logins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ganfolk up`'s NATS refuses anonymous clients; services, a run and the CLI log in."""
    from ganfolk import cli
    from ganfolk.runtime.settings import Settings
    from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc
    from services.stylegan.training import progress

    for variable in local.NATS_LOGIN_VARIABLES:
        monkeypatch.setenv(variable, "from-the-shell")  # never reaches the stack's processes
    state = tmp_path / "stack"
    stack = local.up(
        ["coordinator", "stylegan"], state_dir=str(state), timeout=180, allow_random_weights=True
    )
    try:
        for name in (local.NATS_CONFIG, local.NATS_LOGINS):
            assert (state / name).stat().st_mode & 0o777 == 0o600, name
        assert "nats-logins.json" in stack.describe()

        async def anonymous() -> None:
            await nats.connect(stack.nats_url, allow_reconnect=False, connect_timeout=5)

        with pytest.raises(Exception, match=r"(?i)authorization"):
            asyncio.run(anonymous())

        # A sample task through NATS: the coordinator publishes it, stylegan (its own user) runs it.
        port = next(p.port for p in stack.processes if p.name == "coordinator")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            spec = jobs_pb2.JobSpec(
                prompt="charcoal sketch of a Portuguese fisherman",
                num_samples=4,
                sample_task_size=4,
                name_and_backstory=False,
                mint=False,
                seed=5,
            )
            job_id = stub.Submit(jobs_pb2.SubmitRequest(spec=spec), timeout=30).job.job_id
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                job = stub.Get(jobs_pb2.GetRequest(job_id=job_id), timeout=30).job
                sample = next(s for s in job.stages if s.stage == jobs_pb2.STAGE_SAMPLE)
                if sample.state == jobs_pb2.JOB_STATE_SUCCEEDED:
                    break
                time.sleep(0.2)
            assert sample.state == jobs_pb2.JOB_STATE_SUCCEEDED and sample.images_total == 4
            stub.Cancel(jobs_pb2.CancelRequest(job_id=job_id, reason="test"), timeout=30)

        # A training run and `ganfolk train status` on this machine find their logins.
        for variable in local.NATS_LOGIN_VARIABLES:
            monkeypatch.delenv(variable)
        monkeypatch.setenv("GANFOLK_STATE_DIR", str(state))
        settings = local.nats_login(progress.ProgressSettings(nats_url=stack.nats_url), "train")
        assert settings.nats_user == "train"
        # Another NATS (or credentials of one's own) gets no login from the stack.
        assert local.nats_login(Settings(nats_url="nats://127.0.0.1:1"), "train").nats_user is None
        reporter = progress.NatsReporter(stack.nats_url, settings)
        run_id = f"local-{time.monotonic_ns()}"
        reporter.started(run_id, {"size": 32, "batch": 4})
        reporter.tick({"iteration": 1, "kimg": 0.004, "total_kimg": 0.008})
        reporter.finished("succeeded")
        assert reporter.dropped == 0
        assert cli.main(["train", "status", run_id, "--nats-url", stack.nats_url]) == 0
        assert "state       succeeded" in capsys.readouterr().out
    finally:
        print(local.down(state_dir=str(state)))
    log = (state / "logs" / "nats.log").read_text()
    assert "Violation" not in log, log


def test_up_refuses_a_service_that_is_not_in_the_catalog(tmp_path: Path) -> None:
    with pytest.raises(local.ConfigError, match="not part of this build: nope"):
        local.up(["nope"], state_dir=str(tmp_path))


def test_down_stops_the_coordinator_quickly_and_kills_nothing(tmp_path: Path) -> None:
    # The coordinator used to hold its events pull subscription open, so its NATS drain
    # waited out the client's 30 s default and the launcher SIGKILLed it.
    state = tmp_path / "stack"
    stack = local.up(["coordinator"], state_dir=str(state), timeout=120)
    started = time.monotonic()
    report = local.down(state_dir=str(state))
    took = time.monotonic() - started
    print(f"down took {took:.1f}s:\n{report}")
    assert "killed" not in report
    assert report.splitlines()[0].startswith("coordinator: stopped in ")
    assert took < 10, report
    assert not any(local._alive(p.pid) for p in stack.processes)


def _process(tmp_path: Path, name: str, on_term: str) -> local.Proc:
    """A process that reacts to SIGTERM as ``on_term`` says once it is ready for it."""
    ready = tmp_path / f"{name}.ready"
    code = (
        "import pathlib, signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, {on_term})\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "while True: time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"{name} never got ready"
        time.sleep(0.05)
    return local.Proc(name, proc.pid, "")


def test_stop_waits_for_services_together_and_kills_only_stragglers(tmp_path: Path) -> None:
    slow = "lambda *_: (time.sleep(2), sys.exit(0))"
    procs = [
        _process(tmp_path, "nats-server", "lambda *_: sys.exit(0)"),
        _process(tmp_path, "stylegan", slow),
        _process(tmp_path, "clip", slow),
        _process(tmp_path, "text", "signal.SIG_IGN"),
    ]
    started = time.monotonic()
    report = local._stop(local.Stack(str(tmp_path), "", "", procs), timeout=4)
    took = time.monotonic() - started
    lines = dict(line.split(": ", 1) for line in report)
    assert list(lines) == ["text", "clip", "stylegan", "nats-server"]
    assert lines["text"].startswith("killed after 4s")
    assert all(lines[name].startswith("stopped in ") for name in ("clip", "stylegan", "nats-server"))
    # Both slow services and the straggler were waited for at once: one 4 s wait, not 2 + 2 + 4.
    assert took < 7.5, report
    assert not any(local._alive(p.pid) for p in procs)
