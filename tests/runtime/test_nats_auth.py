"""The generated NATS authorization on a real nats-server: per-service users and permissions."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from ganfolk.runtime import jetstream, nats_auth
from ganfolk.runtime.catalog import SERVICES, Stage
from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.settings import ConfigError, Settings
from ganfolk.runtime.worker import StageHandler, StageWorker, TaskContext
from ganfolk.v1 import common_pb2, events_pb2, text_pb2
from tests.fixtures.nats import AuthNatsServer, connected

ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def coordinator_topology(nc: NATS) -> None:
    """What the coordinator's engine creates at start: streams and the three buckets."""
    js = nc.jetstream()
    await jetstream.ensure_streams(js)
    for bucket in (jetstream.JOBS_BUCKET, jetstream.CANCEL_BUCKET, jetstream.SERVICES_BUCKET):
        await jetstream.ensure_kv(js, bucket, history=1)


async def stored(nc: NATS, subject: str) -> int:
    info = await nc.jetstream().stream_info(jetstream.TASKS_STREAM, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


def task(stage: str, job_id: str) -> tuple[str, bytes]:
    task_id = unique("task")
    meta = common_pb2.TaskMeta(job_id=job_id, task_id=task_id, stage=stage)
    return task_id, text_pb2.PromptsRequest(count=2, meta=meta).SerializeToString()


def test_every_stage_service_and_the_coordinator_get_a_user() -> None:
    users = nats_auth.nats_users()
    services = {e.name for e in SERVICES.values() if e.stages} | {"coordinator"}
    assert set(nats_auth.service_users()) == services
    assert set(users) == services | {"train", "viewer"}
    assert "gallery" not in users  # it talks to the coordinator only
    for user in users:
        perms = nats_auth.permissions(user)
        tasks = [s for s in perms.publish if s.startswith("ganfolk.tasks")]
        assert tasks == (["ganfolk.tasks.>"] if user == "coordinator" else []), user
        assert all(s.startswith(f"_INBOX.{user}.") or s.startswith("$JS.EVENT.") for s in perms.subscribe)
        if user != "coordinator":
            assert not any(
                s.startswith(("$JS.API.STREAM.CREATE", "$JS.API.STREAM.UPDATE")) for s in perms.publish
            )
            assert not any(s == "$JS.API.>" for s in perms.publish)


def test_referenced_passwords_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text(nats_auth.render_config(store_dir=str(tmp_path / "js"), http_port=8222))
    env = {**os.environ, **{nats_auth.password_variable(u): "x" for u in nats_auth.nats_users()}}
    binary = AuthNatsServer(tmp_path).binary
    checked = subprocess.run(
        [binary, "-t", "-c", str(conf)], env=env, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_env_command_prints_a_password_for_every_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert nats_auth.main(["env"]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert set(lines) == {nats_auth.password_variable(u) for u in nats_auth.nats_users()}
    assert all(len(v) >= 24 for v in lines.values())


def test_password_without_user_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="GANFOLK_NATS_USER"):
        jetstream.connect_options(Settings(nats_password=SecretStr("secret")))
    with pytest.raises(ConfigError, match="GANFOLK_NATS_PASSWORD"):
        jetstream.connect_options(Settings(nats_user="text"))
    with pytest.raises(ConfigError, match="GANFOLK_NATS_USER may hold only"):
        jetstream.connect_options(Settings(nats_user="a.>", nats_password=SecretStr("x")))
    options = jetstream.connect_options(Settings(nats_user="text", nats_password=SecretStr("pw")))
    assert options == {"user": "text", "password": "pw", "inbox_prefix": "_INBOX.text"}


async def test_anonymous_and_wrong_password_are_refused(nats_auth_server: AuthNatsServer) -> None:
    for kwargs in ({}, {"user": "mint", "password": "wrong"}):
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await nats.connect(nats_auth_server.url, allow_reconnect=False, connect_timeout=5, **kwargs)


async def test_worker_cannot_publish_a_mint_task_but_the_coordinator_can(
    nats_auth_server: AuthNatsServer,
) -> None:
    mint = jetstream.task_subject(Stage.MINT)
    async with (
        connected(nats_auth_server, "coordinator") as coord,
        connected(nats_auth_server, "stylegan") as sg,
    ):
        await coordinator_topology(coord)
        # JetStream publish: the server drops it and never answers.
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            await sg.jetstream().publish(mint, b"forged", timeout=1.0, headers={"Nats-Msg-Id": "forged-1"})
        # Core publish: dropped as well.
        await sg.publish(mint, b"forged core")
        await sg.flush()
        # Nor may it change the topology to have the server republish events as tasks.
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            await sg.request(f"$JS.API.STREAM.UPDATE.{jetstream.EVENTS_STREAM}", b"{}", timeout=1.0)
        assert await stored(coord, mint) == 0
        # The coordinator's own publish is stored.
        await jetstream.publish_task(coord.jetstream(), Stage.MINT, b"real", unique("task"))
        assert await stored(coord, mint) == 1
        # No user may read another's replies, or tasks straight off the subject.
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            sub = await sg.subscribe("_INBOX.mint.>")
            await sg.flush()
            await sub.next_msg(timeout=0.5)
    log = nats_auth_server.log_text()
    assert 'User "stylegan"' in log and f'Subject "{mint}"' in log
    assert "Subscription Violation" in log


async def test_worker_fetches_and_acks_its_own_tasks_and_publishes_events(
    nats_auth_server: AuthNatsServer,
) -> None:
    stage, job = Stage.PROMPTS, unique("job")

    async def handle(req: text_pb2.PromptsRequest, ctx: TaskContext) -> text_pb2.PromptsResponse:
        if req.count > 10:
            raise InvalidArgument("count must be at most 10")
        await ctx.progress(50, "half")
        return text_pb2.PromptsResponse(prompts=[text_pb2.PortraitPrompt(text="p")] * req.count)

    async with (
        connected(nats_auth_server, "coordinator") as coord,
        connected(nats_auth_server, "text") as text,
    ):
        await coordinator_topology(coord)
        events = await coord.jetstream().subscribe(jetstream.event_subject(job), ordered_consumer=True)
        policy = jetstream.StagePolicy(ack_wait=5, fetch_timeout=0.3, retry_delays=(0.2,))
        worker = StageWorker(text, StageHandler(stage, text_pb2.PromptsRequest, handle, "prompts", policy))
        await worker.setup()
        await jetstream.publish_service_info(text.jetstream(), "text", b"info")
        runner = asyncio.create_task(worker.run())
        try:
            task_id, payload = task(stage, job)
            await jetstream.publish_task(coord.jetstream(), stage, payload, task_id)
            kinds = []
            for _ in range(2):
                event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=20)).data)
                kinds.append(event.WhichOneof("outcome"))
            assert kinds == ["progress", "result"] and event.meta.task_id == task_id
            # Acked: nothing pending or in flight on the stage's consumer.
            for _ in range(50):
                info = await coord.jetstream().consumer_info(jetstream.TASKS_STREAM, worker.consumer)
                if not info.num_ack_pending and not info.num_pending:
                    break
                await asyncio.sleep(0.1)
            assert (info.num_ack_pending, info.num_pending) == (0, 0)
            # Bad input: terminated, reported, and dead-lettered on the stage's own subject.
            bad_id = unique("task")
            meta = common_pb2.TaskMeta(job_id=job, task_id=bad_id, stage=stage)
            bad = text_pb2.PromptsRequest(count=11, meta=meta).SerializeToString()
            await jetstream.publish_task(coord.jetstream(), stage, bad, bad_id)
            event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=20)).data)
            assert event.failure.code == "INVALID_ARGUMENT" and event.meta.task_id == bad_id
            dlq = jetstream.dlq_subject(stage)
            for _ in range(50):
                info = await coord.jetstream().stream_info(jetstream.DLQ_STREAM, subjects_filter=dlq)
                if (info.state.subjects or {}).get(dlq):
                    break
                await asyncio.sleep(0.1)
            assert (info.state.subjects or {}).get(dlq) == 1
        finally:
            await worker.stop(grace=5)
            await asyncio.wait_for(runner, 10)
    assert "Violation" not in nats_auth_server.log_text()


def start_text_service(
    server: AuthNatsServer, stage: str, tmp_path: Path, calls: Path
) -> subprocess.Popen[bytes]:
    """The runtime's test service as a process, connected as the text service's user."""
    env = {
        **os.environ,
        **server.env("text"),
        "GANFOLK_GRPC_PORT": "0",
        "GANFOLK_STORE_URL": str(tmp_path / "objects"),
        "GANFOLK_STATE_DIR": str(tmp_path / "state"),
        "SAMPLE_STAGE": stage,
        "SAMPLE_CALLS_FILE": str(calls),
    }
    code = (
        "import asyncio; from tests.runtime.sample_service import SERVICE; "
        "from ganfolk.runtime.service import run_service; "
        "from ganfolk.runtime.settings import Settings, load_settings; "
        "asyncio.run(run_service(SERVICE, load_settings(Settings, service='text')))"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)


async def test_service_process_waits_for_the_coordinator_then_runs_a_task(
    nats_auth_server: AuthNatsServer, tmp_path: Path
) -> None:
    """A real service process (the runtime's test service, as user text) under its own user."""
    stage, job = Stage.PROMPTS, unique("job")
    calls = tmp_path / "calls.txt"
    proc = start_text_service(nats_auth_server, str(stage), tmp_path, calls)
    try:
        async with connected(nats_auth_server, "coordinator") as coord:
            # The service starts before the streams exist: it may not create them, so it waits.
            for _ in range(600):
                if 'User "text"' in nats_auth_server.log_text() or proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            assert "STREAM.CREATE" in nats_auth_server.log_text()
            assert proc.poll() is None
            await coordinator_topology(coord)
            events = await coord.jetstream().subscribe(jetstream.event_subject(job), ordered_consumer=True)
            task_id, payload = task(stage, job)
            await jetstream.publish_task(coord.jetstream(), stage, payload, task_id)
            event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=60)).data)
            assert event.WhichOneof("outcome") == "result" and event.meta.task_id == task_id
            services = await jetstream.ensure_kv(coord.jetstream(), jetstream.SERVICES_BUCKET, history=1)
            assert (await jetstream.kv_read(services, "text")).value
    finally:
        proc.terminate()
        proc.wait(30)
    assert calls.read_text().split()[0] == task_id
    violations = [line for line in nats_auth_server.log_text().splitlines() if "Violation" in line]
    # Only the refused topology writes of the service that started first.
    assert all("STREAM.CREATE" in line or "STREAM.UPDATE" in line for line in violations), violations


async def test_real_coordinator_and_stylegan_run_a_job_as_their_own_users(
    nats_auth_server: AuthNatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator and the stylegan service, each under its own user: fan-out, cancel, watch."""
    from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc
    from services.coordinator.main import SERVICE as COORDINATOR
    from services.stylegan.main import SERVICE as STYLEGAN
    from tests.fixtures import golden
    from tests.fixtures.services import serving

    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(golden.path("stylegan2_tiny.pt")))
    common: dict[str, Any] = {"nats_url": nats_auth_server.url, "store_url": str(tmp_path / "objects")}

    def login(user: str) -> dict[str, Any]:
        return {"nats_user": user, "nats_password": nats_auth_server.passwords[user]}

    async with (
        serving(COORDINATOR, **common, **login("coordinator")) as (_, channel),
        serving(STYLEGAN, **common, **login("stylegan")),
    ):
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        spec = jobs_pb2.JobSpec(
            prompt="charcoal sketch of an inquisitive Turkish boy",
            num_samples=6,
            sample_task_size=4,
            name_and_backstory=False,
            seed=11,
        )
        job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec))).job.job_id
        for _ in range(600):
            job = (await stub.Get(jobs_pb2.GetRequest(job_id=job_id))).job
            sample = next(s for s in job.stages if s.stage == jobs_pb2.STAGE_SAMPLE)
            if sample.state == jobs_pb2.JOB_STATE_SUCCEEDED:
                break
            await asyncio.sleep(0.1)
        assert sample.state == jobs_pb2.JOB_STATE_SUCCEEDED and sample.images_total == 6
        cancelled = await stub.Cancel(jobs_pb2.CancelRequest(job_id=job_id, reason="test"))
        assert cancelled.job.state == jobs_pb2.JOB_STATE_CANCELLED
        updates = [u async for u in stub.Watch(jobs_pb2.WatchRequest(job_id=job_id))]
        assert updates[-1].job.state == jobs_pb2.JOB_STATE_CANCELLED
    assert "Violation" not in nats_auth_server.log_text()
