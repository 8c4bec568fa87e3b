"""Training progress on a real nats-server: events, the run registry, the CLI, NATS outages.

The reporter is driven the way the training loop drives it (synchronous calls on rank 0);
everything it writes is read back over NATS as another machine would.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import DeliverPolicy, DiscardPolicy, RetentionPolicy

from ganfolk import cli
from ganfolk.v1 import train_pb2
from services.stylegan.training import progress, report
from services.stylegan.training.progress import NatsReporter, ProgressSettings
from tests.fixtures.nats import NatsServer, free_port

CONFIG: dict[str, Any] = {
    "data": "s3://ganfolk/datasets/faces",
    "out": "s3://ganfolk/runs/faces",
    "size": 256,
    "batch": 32,
    "kimg": 2.0,
    "iterations": None,
    "total_iterations": 63,
    "aug": "ada",
    "gamma": 0.4096,
    "world_size": 8,
    "gpus": 8,
    "nnodes": "1",
    "lr": 0.002,
    "nested": {"ignored": True},
}


def stats(i: int, **more: float) -> dict[str, float]:
    return {
        "iteration": i,
        "kimg": i * 0.032,
        "total_kimg": 2.0,
        "sec_per_kimg": 12.5,
        "sec_per_iter": 0.4,
        "loss_d": 1.2,
        "loss_g": 0.9,
        "r1": 0.05,
        "ada_p": 0.01 * i,
        "ada_sign": 0.1,
        "aug/xflip": 0.5,
        **more,
    }


def new_run() -> str:
    return f"test-run-{uuid.uuid4().hex[:8]}"


def settings(**kw: Any) -> ProgressSettings:
    return ProgressSettings(**kw)


async def read_events(url: str, run_id: str) -> list[train_pb2.TrainEvent]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(
            progress.train_subject(run_id), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        events = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                break
            events.append(train_pb2.TrainEvent.FromString(msg.data))
        return events
    finally:
        await nc.close()


async def read_entry(url: str, run_id: str) -> tuple[train_pb2.TrainRun, int]:
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(progress.RUNS_BUCKET)
        entry = await kv.get(progress.run_key(run_id))
        assert entry.value is not None
        return train_pb2.TrainRun.FromString(entry.value), len(entry.value)
    finally:
        await nc.close()


def entry(url: str, run_id: str) -> tuple[train_pb2.TrainRun, int]:
    return asyncio.run(read_entry(url, run_id))


def events(url: str, run_id: str) -> list[train_pb2.TrainEvent]:
    return asyncio.run(read_events(url, run_id))


def ran(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def reporter(nats_server: NatsServer) -> Iterator[NatsReporter]:
    r = NatsReporter(nats_server.url, settings(), host="trainer-0")
    yield r
    r.close()


# ------------------------------------------------------------------------------ events and entry


def test_events_arrive_and_the_entry_follows(nats_server: NatsServer, reporter: NatsReporter) -> None:
    run_id = new_run()
    reporter.started(run_id, CONFIG)
    for i in range(1, 21):
        reporter.tick(stats(i, mem_gib=3.5))
    reporter.snapshot(
        20,
        "s3://ganfolk/runs/faces/000020.pt",
        "ab" * 32,
        "s3://ganfolk/runs/faces/000020.png",
        {"swd": 0.123},
    )
    reporter.finished("succeeded")

    got = events(nats_server.url, run_id)
    kinds = [e.WhichOneof("kind") for e in got]
    assert kinds == ["started"] + ["tick"] * 20 + ["snapshot", "finished"]
    assert all(e.run_id == run_id for e in got)
    ticks = [e.tick for e in got if e.WhichOneof("kind") == "tick"]
    assert [t.iteration for t in ticks] == list(range(1, 21))
    assert ticks[-1].ada_p == pytest.approx(0.2) and ticks[-1].mem_gib == pytest.approx(3.5)
    assert ticks[-1].extra["aug/xflip"] == pytest.approx(0.5)
    assert not ticks[-1].HasField("path")  # not computed in the tick: absent, not 0
    assert got[0].started.config.total_kimg == 2.0 and got[0].started.config.world_size == 8

    run, _ = entry(nats_server.url, run_id)
    assert run.state == train_pb2.TRAIN_STATE_SUCCEEDED
    assert run.host == "trainer-0" and run.starts == 1 and run.snapshots == 1
    assert run.last_tick.iteration == 20
    assert run.last_snapshot.checkpoint_uri.endswith("000020.pt")
    assert run.last_snapshot.checkpoint_sha256 == "ab" * 32
    assert run.last_snapshot.metrics["swd"] == pytest.approx(0.123)
    assert run.config.dataset == CONFIG["data"] and run.config.output == CONFIG["out"]
    assert run.config.iterations == 63 and run.config.other["gpus"] == "8"
    assert "nested" not in run.config.other
    assert run.HasField("finished_at") and run.updated_at.ToNanoseconds() >= run.started_at.ToNanoseconds()


def test_entry_size_does_not_grow_with_training(nats_server: NatsServer, reporter: NatsReporter) -> None:
    run_id = new_run()
    reporter.started(run_id, CONFIG)
    reporter.tick(stats(1))
    assert reporter.flush(10)
    _, early = entry(nats_server.url, run_id)
    for i in range(2, 400):
        reporter.tick(stats(i))
        if i % 50 == 0:
            reporter.snapshot(i, f"s3://ganfolk/runs/{i:06d}.pt", "cd" * 32, "", {"swd": 1.0 / i})
    assert reporter.flush(20)
    run, late = entry(nats_server.url, run_id)
    assert run.last_tick.iteration == 399 and run.snapshots == 7
    assert run.last_snapshot.checkpoint_uri == "s3://ganfolk/runs/000350.pt"
    # Only the latest tick and snapshot are kept: the entry is the same size after 400 ticks.
    assert late < early + 400 and late < 4096


def test_maps_and_texts_are_capped(nats_server: NatsServer, reporter: NatsReporter) -> None:
    run_id = new_run()
    big = {**CONFIG, **{f"opt{i}": "x" * 5000 for i in range(200)}}
    reporter.started(run_id, big)
    reporter.tick(stats(1, **{f"aug/k{i}": float(i) for i in range(500)}))
    reporter.finished("failed", "Traceback " * 2000)
    run, size = entry(nats_server.url, run_id)
    assert run.state == train_pb2.TRAIN_STATE_FAILED
    assert (
        len(run.config.other) <= progress.MAX_MAP_ENTRIES
        and len(run.last_tick.extra) <= progress.MAX_MAP_ENTRIES
    )
    assert len(run.error) <= progress.MAX_ERROR and size < progress.MAX_MESSAGE_BYTES


def test_a_resumed_run_keeps_its_history(nats_server: NatsServer) -> None:
    run_id = new_run()
    first = NatsReporter(nats_server.url, settings(), host="pod-a")
    first.started(run_id, CONFIG)
    first.tick(stats(10))
    first.snapshot(10, "s3://ganfolk/runs/000010.pt", "ee" * 32, "", {"swd": 0.5})
    first.finished("failed", "node lost")
    before, _ = entry(nats_server.url, run_id)

    second = NatsReporter(nats_server.url, settings(), host="pod-b")
    second.started(run_id, {**CONFIG, "start_iter": 10})
    second.tick(stats(11))
    assert second.flush(10)
    run, _ = entry(nats_server.url, run_id)
    assert run.state == train_pb2.TRAIN_STATE_RUNNING and run.error == ""
    assert run.starts == 2 and run.host == "pod-b" and run.config.start_iter == 10
    assert run.started_at == before.started_at
    # Until the resumed session stores a checkpoint, the last one is still the one to use.
    assert run.last_snapshot.checkpoint_uri == "s3://ganfolk/runs/000010.pt" and run.snapshots == 1
    second.snapshot(12, "s3://ganfolk/runs/000012.pt", "ff" * 32, "", {"swd": 0.4})
    second.finished("succeeded")
    run, _ = entry(nats_server.url, run_id)
    assert run.snapshots == 2 and run.last_snapshot.iteration == 12 and run.starts == 2


def test_run_ids_become_safe_keys() -> None:
    assert progress.run_key("stylegan256-0a1b2c") == "stylegan256-0a1b2c"
    assert progress.run_key("faces v2.1/a*b>") == "faces-v2-1-a-b-"
    assert progress.train_subject("a.b") == "ganfolk.train.a-b"
    with pytest.raises(ValueError):
        progress.run_key("...")


def test_stream_is_bounded(nats_server: NatsServer, reporter: NatsReporter) -> None:
    reporter.started(new_run(), CONFIG)
    assert reporter.flush(10)

    async def info() -> Any:
        nc = await nats.connect(nats_server.url)
        try:
            return (await nc.jetstream().stream_info(progress.TRAIN_STREAM)).config
        finally:
            await nc.close()

    cfg = asyncio.run(info())
    assert cfg.retention == RetentionPolicy.LIMITS and cfg.discard == DiscardPolicy.OLD
    assert cfg.max_age == pytest.approx(30 * 86400) and cfg.max_bytes == 256 * 1024 * 1024
    assert cfg.max_msgs_per_subject == 20_000 and cfg.max_msg_size == progress.MAX_MESSAGE_BYTES


# ------------------------------------------------------------------------------ NATS down


def test_nats_down_never_slows_or_breaks_training() -> None:
    down = f"nats://127.0.0.1:{free_port()}"
    r = NatsReporter(down, settings(), close_timeout=1.0)
    r.started(new_run(), CONFIG)
    took = []
    for i in range(500):
        t0 = time.perf_counter()
        r.tick(stats(i))
        took.append(time.perf_counter() - t0)
    r.snapshot(500, "s3://x/000500.pt", "00" * 32, "", {"swd": 1.0})
    t0 = time.perf_counter()
    r.finished("succeeded")
    assert time.perf_counter() - t0 < 1.0 + 6.0  # close_timeout, then the thread is told to stop
    assert max(took) < 0.05 and sum(took) < 0.5
    assert r.dropped > 0  # the backlog is bounded: the oldest events went
    assert r._thread is not None and not r._thread.is_alive()


def test_reporter_catches_up_after_a_broker_restart(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    run_id = new_run()
    r = NatsReporter(server.url, settings(), retry_s=0.3, publish_timeout=0.5)
    try:
        r.started(run_id, CONFIG)
        r.tick(stats(1))
        assert r.flush(10)
        server.stop()
        for i in range(2, 30):
            r.tick(stats(i))  # must not block while the broker is away
        server.start()
        r.tick(stats(30))
        assert r.flush(30), "the entry never caught up after NATS came back"
        run, _ = entry(server.url, run_id)
        assert run.last_tick.iteration == 30 and run.state == train_pb2.TRAIN_STATE_RUNNING
    finally:
        r.close()
        server.stop()


# ------------------------------------------------------------------------------ the hook


def test_make_reporter_adds_nats_and_metrics(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GANFOLK_NATS_URL", nats_server.url)
    monkeypatch.setenv("GANFOLK_METRICS_PORT", "0")
    monkeypatch.delenv("RANK", raising=False)
    fan = report.make_reporter(None)
    assert isinstance(fan, report.FanOut)
    kinds = [type(r).__name__ for r in fan.reporters]
    assert kinds == ["LogReporter", "PrometheusReporter", "NatsReporter"]

    run_id = new_run()
    fan.started(run_id, CONFIG)
    fan.tick(stats(7))
    fan.snapshot(7, "s3://x/000007.pt", "11" * 32, "", {"swd": 0.25})
    assert progress._metrics_port is not None
    body = (
        urllib.request.urlopen(f"http://127.0.0.1:{progress._metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    assert f'ganfolk_train_kimg{{run="{run_id}"}} 0.224' in body
    assert f'ganfolk_train_ada_p{{run="{run_id}"}} 0.07' in body
    assert f'ganfolk_train_loss{{loss="d",run="{run_id}"}} 1.2' in body
    assert f'ganfolk_train_metric{{metric="swd",run="{run_id}"}} 0.25' in body
    fan.finished("succeeded")
    assert entry(nats_server.url, run_id)[0].state == train_pb2.TRAIN_STATE_SUCCEEDED


def test_make_reporters_respects_rank_and_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANFOLK_NATS_URL", "nats://127.0.0.1:1")
    monkeypatch.delenv("GANFOLK_METRICS_PORT", raising=False)
    monkeypatch.setenv("RANK", "3")
    assert progress.make_reporters(None) == []
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("GANFOLK_TRAIN_REPORT_NATS", "false")
    assert progress.make_reporters(None) == []
    monkeypatch.delenv("GANFOLK_TRAIN_REPORT_NATS")
    (nats_reporter,) = progress.make_reporters(None)
    assert isinstance(nats_reporter, NatsReporter) and nats_reporter.url == "nats://127.0.0.1:1"
    nats_reporter.close()
    # Nothing configured and nothing answering at the default address: no NATS reporter.
    monkeypatch.delenv("GANFOLK_NATS_URL")
    monkeypatch.setattr(progress, "nats_answers", lambda url, timeout=0.3: False)
    assert progress.make_reporters(None) == []


# ------------------------------------------------------------------------------ the CLI


def test_cli_list_and_status(
    nats_server: NatsServer, reporter: NatsReporter, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = new_run()
    reporter.started(run_id, CONFIG)
    reporter.tick(stats(40))
    uri = f"s3://ganfolk/runs/{run_id}/000040.pt"
    reporter.snapshot(40, uri, "9f" * 32, uri.replace(".pt", ".png"), {"swd": 0.0812})
    assert reporter.flush(10)

    code, out, _ = ran(["train", "list", "--nats-url", nats_server.url], capsys)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["RUN", "STATE", "KIMG"] and "LAST CHECKPOINT" in header
    (row,) = [r for r in rows if r.startswith(run_id)]
    assert row.split()[1:6] == ["running", "1.3/2", "12.5", "0.400", "0.0812"]
    assert uri in row and row.endswith("ago")

    code, out, _ = ran(["train", "list", "--state", "succeeded", "--nats-url", nats_server.url], capsys)
    assert code == 0 and run_id not in out

    code, out, _ = ran(["train", "status", run_id, "--nats-url", nats_server.url], capsys)
    assert code == 0
    assert "state       running" in out and "host        trainer-0" in out
    assert f"GANFOLK_STYLEGAN_CHECKPOINT={uri}\n" in out
    assert f"GANFOLK_STYLEGAN_CHECKPOINT_SHA256={'9f' * 32}" in out
    assert "swd=0.0812" in out and "size 256" in out and "world size 8" in out

    code, out, _ = ran(["train", "status", run_id, "--json", "--nats-url", nats_server.url], capsys)
    assert code == 0 and '"checkpoint_uri": "' + uri + '"' in out


def test_cli_unknown_run_is_a_clear_error(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    for action in ("status", "watch"):
        code, out, err = ran(["train", action, "no-such-run", "--nats-url", nats_server.url], capsys)
        assert code == 1 and out == ""
        assert f"ganfolk train {action}: no training run 'no-such-run' in ganfolk_train_runs" in err


def test_cli_without_nats_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    code, _, err = ran(["train", "list", "--nats-url", url], capsys)
    assert code == 1 and f"cannot reach NATS at {url}" in err


def test_cli_watch_replays_then_follows_to_the_end(
    nats_server: NatsServer, reporter: NatsReporter, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = new_run()
    reporter.started(run_id, CONFIG)
    for i in range(1, 6):
        reporter.tick(stats(i))
    assert reporter.flush(10)

    def train_more() -> None:
        time.sleep(1.5)  # watch is following by now
        for i in range(6, 9):
            reporter.tick(stats(i))
        reporter.snapshot(8, "s3://ganfolk/runs/000008.pt", "aa" * 32, "", {"swd": 0.3})
        reporter.finished("succeeded")

    trainer = threading.Thread(target=train_more)
    trainer.start()
    code, out, _ = ran(["train", "watch", run_id, "--nats-url", nats_server.url], capsys)
    trainer.join()
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"run {run_id}: running"
    its = [int(line.split(" it ")[1].split()[0]) for line in lines if " it " in line]
    assert its == [5, 6, 7, 8]  # the latest tick replayed, then each new one
    assert "snapshot 000008 s3://ganfolk/runs/000008.pt" in out
    assert lines[-1].endswith("finished: succeeded")

    # A finished run: watch says so and returns at once, its exit status from the outcome.
    code, out, _ = ran(["train", "watch", run_id, "--nats-url", nats_server.url], capsys)
    assert code == 0 and out.splitlines()[0] == f"run {run_id}: succeeded"


def test_cli_watch_fails_for_a_failed_run(
    nats_server: NatsServer, reporter: NatsReporter, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = new_run()
    reporter.started(run_id, CONFIG)
    reporter.tick(stats(1))
    assert reporter.flush(10)
    threading.Timer(1.0, reporter.finished, args=("failed", "CUDA out of memory")).start()
    code, out, _ = ran(["train", "watch", run_id, "--nats-url", nats_server.url], capsys)
    assert code == 1 and "finished: failed (CUDA out of memory)" in out


# ------------------------------------------------------------------------------ a real run


def test_a_training_run_reports_to_nats_and_status_points_at_its_checkpoint(
    nats_server: NatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ganfolk.runtime.hashing import file_sha256
    from services.stylegan.training.config import TrainConfig
    from services.stylegan.training.data import make_disc_dataset

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "GANFOLK_METRICS_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GANFOLK_NATS_URL", nats_server.url)
    make_disc_dataset(tmp_path / "discs", 8, 32)
    run_id = new_run()
    cfg = TrainConfig(
        str(tmp_path / "discs"),
        str(tmp_path / "out"),
        size=32,
        batch=4,
        iterations=2,
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

    run, _ = entry(nats_server.url, run_id)
    assert run.state == train_pb2.TRAIN_STATE_SUCCEEDED and run.last_tick.iteration == 2
    assert run.config.size == 32 and run.config.batch == 4 and run.config.world_size == 1
    assert "swd" in run.last_snapshot.metrics and run.snapshots >= 1
    kinds = [e.WhichOneof("kind") for e in events(nats_server.url, run_id)]
    assert kinds[0] == "started" and kinds.count("tick") == 2 and kinds[-1] == "finished"

    code, out, _ = ran(["train", "status", run_id, "--nats-url", nats_server.url], capsys)
    assert code == 0
    settings_lines = dict(
        line.split("=", 1) for line in out.splitlines() if line.startswith("GANFOLK_STYLEGAN_CHECKPOINT")
    )
    checkpoint = settings_lines["GANFOLK_STYLEGAN_CHECKPOINT"]
    path = Path(checkpoint.removeprefix("file://"))
    assert path.is_file() and file_sha256(path) == settings_lines["GANFOLK_STYLEGAN_CHECKPOINT_SHA256"]
