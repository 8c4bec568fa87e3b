"""The training registry under the generated NATS authorization (real nats-server).

The coordinator owns stream GANFOLK_TRAIN and bucket ganfolk_train_runs; a training run, as
user ``train``, only publishes its events and writes its entry; ``viewer`` only reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import RePublish

from ganfolk import cli
from ganfolk.runtime import jetstream, nats_auth
from ganfolk.runtime import train_topology as tt
from ganfolk.runtime.catalog import Stage
from ganfolk.v1 import train_pb2
from services.stylegan.training import progress
from tests.fixtures.nats import AuthNatsServer, NatsServer, connected

REFUSED = (nats.errors.TimeoutError, TimeoutError)


async def coordinator_topology(nc: NATS) -> None:
    """What the coordinator creates at start: the job streams and the training registry."""
    js = nc.jetstream()
    await jetstream.ensure_streams(js)
    await tt.ensure_train_topology(js, tt.TrainTopologySettings())


async def test_train_user_reports_but_cannot_queue_tasks_or_touch_streams(
    nats_auth_server: AuthNatsServer,
) -> None:
    run = f"run-{uuid.uuid4().hex[:8]}"
    async with (
        connected(nats_auth_server, "coordinator") as coord,
        connected(nats_auth_server, nats_auth.TRAIN) as train,
        connected(nats_auth_server, nats_auth.VIEWER) as viewer,
    ):
        await coordinator_topology(coord)
        js = train.jetstream(timeout=1.0)
        # What a run does: open the registry, publish events, write its entry (compare-and-set).
        kv = await tt.open_train_topology(js, tt.TrainTopologySettings())
        event = train_pb2.TrainEvent(run_id=run, tick=train_pb2.TrainTick(iteration=3))
        await js.publish(progress.train_subject(run), event.SerializeToString(), stream=tt.TRAIN_STREAM)
        entry = train_pb2.TrainRun(run_id=run, state=train_pb2.TRAIN_STATE_RUNNING)
        await jetstream.kv_update(kv, run, lambda _: entry.SerializeToString())
        entry.state = train_pb2.TRAIN_STATE_SUCCEEDED
        await jetstream.kv_update(kv, run, lambda _: entry.SerializeToString())

        # No mint task, not even through JetStream.
        mint = jetstream.task_subject(Stage.MINT)
        with pytest.raises(REFUSED):
            await js.publish(mint, b"forged", headers={"Nats-Msg-Id": "forged-train"})
        # No stream update: republishing the training events as mint tasks is refused ...
        cfg = tt.train_stream_config(tt.TrainTopologySettings())
        cfg.republish = RePublish(src=f"{tt.SUBJECT_PREFIX}.>", dest="ganfolk.tasks.mint")
        with pytest.raises(REFUSED):
            await js.update_stream(cfg)
        # ... and so is a stream of its own on the task subjects.
        with pytest.raises(REFUSED):
            await js.add_stream(name="TRAIN_FORGED", subjects=["ganfolk.tasks.mint.>"])
        live = (await coord.jetstream().stream_info(tt.TRAIN_STREAM)).config
        assert live.republish is None
        tasks = await coord.jetstream().stream_info(jetstream.TASKS_STREAM)
        assert tasks.state.messages == 0

        # The viewer reads the registry and the events, and writes nothing.
        vjs = viewer.jetstream(timeout=1.0)
        (listed,) = [r for r in await progress.list_runs(vjs) if r.run_id == run]
        assert listed.state == train_pb2.TRAIN_STATE_SUCCEEDED
        assert (await progress.get_run(vjs, run)).run_id == run
        sub = await vjs.subscribe(progress.train_subject(run), ordered_consumer=True, stream=tt.TRAIN_STREAM)
        got = train_pb2.TrainEvent.FromString((await sub.next_msg(timeout=5)).data)
        assert got.tick.iteration == 3
        await sub.unsubscribe()
        with pytest.raises(REFUSED):
            await (await vjs.key_value(tt.RUNS_BUCKET)).put(run, b"overwritten")
        with pytest.raises(REFUSED):
            await vjs.publish(progress.train_subject(run), b"forged")
    log = nats_auth_server.log_text()
    assert 'User "train"' in log and f'Subject "{mint}"' in log
    assert f"$JS.API.STREAM.UPDATE.{tt.TRAIN_STREAM}" in log and "$JS.API.STREAM.CREATE.TRAIN_FORGED" in log


async def test_without_the_coordinator_a_run_is_told_who_creates_the_registry(
    nats_auth_server: AuthNatsServer,
) -> None:
    async with connected(nats_auth_server, nats_auth.TRAIN) as train:
        with pytest.raises(tt.TrainTopologyMissing, match="coordinator creates it"):
            await tt.open_train_topology(train.jetstream(timeout=1.0), tt.TrainTopologySettings())


async def test_a_run_never_changes_an_existing_stream_but_creates_a_missing_one_on_an_open_server(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(tt.TRAIN_STREAM)
        # Missing: an open server lets the run create it.
        await tt.open_train_topology(js, tt.TrainTopologySettings())
        assert (await js.stream_info(tt.TRAIN_STREAM)).config.max_msgs_per_subject == 20_000
        # Existing with other bounds (the owner's): the run leaves them as they are.
        owner = tt.TrainTopologySettings(train_events_per_run=500)
        await tt.ensure_train_topology(js, owner)
        await tt.open_train_topology(js, tt.TrainTopologySettings())
        assert (await js.stream_info(tt.TRAIN_STREAM)).config.max_msgs_per_subject == 500
        # The owner brings it to its own configuration.
        await tt.ensure_train_topology(js, tt.TrainTopologySettings())
        assert (await js.stream_info(tt.TRAIN_STREAM)).config.max_msgs_per_subject == 20_000
    finally:
        await nc.close()


def test_a_training_run_reports_as_the_train_user(
    nats_auth_server: AuthNatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A short real run under the generated authorization: progress as `train`, read as `viewer`."""
    from services.stylegan.training.config import TrainConfig
    from services.stylegan.training.data import make_disc_dataset

    async def prepare() -> None:
        async with connected(nats_auth_server, "coordinator") as coord:
            await coordinator_topology(coord)

    asyncio.run(prepare())
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "GANFOLK_METRICS_PORT", "GANFOLK_NATS_CREDS_FILE"):
        monkeypatch.delenv(var, raising=False)
    for key, value in nats_auth_server.env(nats_auth.TRAIN).items():
        monkeypatch.setenv(key, value)
    make_disc_dataset(tmp_path / "discs", 8, 32)
    run_id = f"auth-run-{uuid.uuid4().hex[:8]}"
    cfg = TrainConfig(
        str(tmp_path / "discs"),
        str(tmp_path / "out"),
        size=32,
        batch=4,
        iterations=1,
        fmap_max=32,
        style_dim=32,
        n_mlp=2,
        workers=0,
        metric_images=8,
        grid=4,
        device="cpu",
        log_every=1,
        snapshot_kimg=0.008,
        cache_dir=str(tmp_path / "cache"),
        run_id=run_id,
    )
    assert cli.main(["train", "stylegan", *cfg.validate().to_argv()]) == 0
    capsys.readouterr()

    for key, value in nats_auth_server.env(nats_auth.VIEWER).items():
        monkeypatch.setenv(key, value)
    assert cli.main(["train", "status", run_id, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["state"] == "TRAIN_STATE_SUCCEEDED" and int(record["last_tick"]["iteration"]) == 1
    assert record["last_snapshot"]["checkpoint_sha256"]  # the checkpoint reached the registry too
    assert cli.main(["train", "watch", run_id]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert "Violation" not in nats_auth_server.log_text()
