"""Horizontal scaling: one job's ``sample`` stage on 1, then 2 stylegan service processes.

    python bench/replicas.py [--tasks 16] [--seeds 2] [--size 64] [--rounds 2]

A real nats-server; each replica is ``python -m ganfolk.cli serve stylegan`` (random weights,
``--size`` px, one compute thread: OMP_NUM_THREADS=1) sharing the stage's durable consumer,
as replicas of a deployment do. The tasks of one job are published on the ``sample`` stage
the way the coordinator publishes them, and the clock runs from the first publish to the
last result event on ``ganfolk.events.<job>``. Each replica is warmed up over gRPC and the
tasks go out only once every replica is waiting on the consumer. Prints samples/s for both
runs, their ratio, the tasks each replica ran (from its /metrics) and the load average.

On a machine shared with other work two processes may not get two cores' worth of time, so
the same sampling is also timed in 1 and 2 plain processes (the model's ``sample`` called
in a loop: no NATS, store or gRPC) just before each service run; their ratio is the most
the machine allowed at that moment, and the services' ratio is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from ganfolk.runtime import jetstream  # noqa: E402
from ganfolk.runtime.catalog import Stage  # noqa: E402
from ganfolk.v1 import common_pb2, events_pb2, stylegan_pb2, stylegan_pb2_grpc  # noqa: E402
from tests.fixtures.nats import NatsServer, free_port  # noqa: E402
from tests.fixtures.services import wait_serving  # noqa: E402

_TASKS_OK = re.compile(r'^ganfolk_tasks_total\{[^}]*outcome="ok"[^}]*stage="sample"[^}]*\}\s+(\S+)', re.M)


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path

    def tasks_done(self) -> int:
        """Sample tasks this replica finished, from its Prometheus counter."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(int(float(v)) for v in _TASKS_OK.findall(text))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def compute_env(size: int) -> dict[str, str]:
    return {
        **os.environ,
        "GANFOLK_ALLOW_RANDOM_WEIGHTS": "1",
        "GANFOLK_STYLEGAN_RANDOM_SIZE": str(size),
        # One compute thread per process: the comparison is of processes, not of thread pools.
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def start_replica(work: Path, nats_url: str, size: int, index: int) -> Replica:
    port, metrics_port = free_port(), free_port()
    env = {
        **compute_env(size),
        "GANFOLK_NATS_URL": nats_url,
        "GANFOLK_STORE_URL": str(work / "objects"),
        "GANFOLK_STATE_DIR": str(work / "state"),
        "GANFOLK_GRPC_PORT": str(port),
        "GANFOLK_METRICS_PORT": str(metrics_port),
    }
    log = work / f"stylegan-{index}-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ganfolk.cli", "serve", "stylegan"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    return Replica(proc, port, metrics_port, log)


async def warm_up(replica: Replica, seeds: int) -> None:
    """Health SERVING, then one Sample over gRPC so first-call costs stay out of the timing."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
        waiter = asyncio.create_task(wait_serving(channel, timeout=300))
        while not waiter.done():
            if replica.proc.poll() is not None:
                waiter.cancel()
                raise RuntimeError(f"replica exited with {replica.proc.returncode}; see {replica.log}")
            await asyncio.sleep(0.2)
        waiter.result()
        stub = stylegan_pb2_grpc.StyleGANServiceStub(channel)
        request = stylegan_pb2.SampleRequest(
            seed_range=stylegan_pb2.SeedRange(start=10_000, count=seeds), output_prefix="bench/warm-up"
        )
        await stub.Sample(request, timeout=300)


async def wait_pulling(js: object, replicas: int, timeout: float = 120.0) -> None:
    """Until every replica's worker has a pull request waiting on the stage's consumer."""
    deadline = time.monotonic() + timeout
    consumer = jetstream.consumer_name(Stage.SAMPLE)
    while True:
        try:
            info = await js.consumer_info(jetstream.TASKS_STREAM, consumer)  # type: ignore[attr-defined]
            if (info.num_waiting or 0) >= replicas:
                return
        except Exception:  # the first worker has not created the consumer yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{replicas} workers not pulling on {consumer} after {timeout}s")
        await asyncio.sleep(0.1)


async def run_job(nats_url: str, job_id: str, tasks: int, seeds: int, replicas: int) -> float:
    """Publish one job's sample tasks; seconds until every result event has arrived."""
    nc = await jetstream.connect(nats_url, "bench-replicas")
    js = nc.jetstream()
    try:
        await jetstream.ensure_streams(js)
        await wait_pulling(js, replicas)
        events = await nc.subscribe(jetstream.event_subject(job_id))
        payloads = []
        for i in range(tasks):
            meta = common_pb2.TaskMeta(
                job_id=job_id,
                task_id=f"{job_id}.{Stage.SAMPLE.value}.{i}",
                stage=Stage.SAMPLE.value,
                output_prefix=f"jobs/{job_id}/samples",
                shard_index=i,
                shard_count=tasks,
            )
            request = stylegan_pb2.SampleRequest(
                seed_range=stylegan_pb2.SeedRange(start=i * seeds, count=seeds),
                noise_mode=stylegan_pb2.NOISE_MODE_CONST,
                meta=meta,
            )
            payloads.append((meta.task_id, request.SerializeToString()))
        start = time.perf_counter()
        for task_id, payload in payloads:
            await jetstream.publish_task(js, Stage.SAMPLE.value, payload, task_id)
        done: set[str] = set()
        while len(done) < tasks:
            msg = await events.next_msg(timeout=600)
            event = events_pb2.StageEvent.FromString(msg.data)
            which = event.WhichOneof("outcome")
            if which == "failure" and not event.failure.retryable:
                raise RuntimeError(f"task {event.meta.task_id} failed: {event.failure.message}")
            if which == "result":
                done.add(event.meta.task_id)
        return time.perf_counter() - start
    finally:
        await nc.drain()


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def plain_worker(tasks: int, seeds: int) -> None:
    """Child of :func:`plain_processes`: load, say ready, wait for go, sample, say done."""
    from ganfolk.runtime.settings import load_settings
    from services.stylegan.backends import load_sampler
    from services.stylegan.config import StyleGANSettings
    from services.stylegan.core import SampleParams

    sampler = load_sampler(load_settings(StyleGANSettings, service="stylegan"))
    sampler.sample(SampleParams(seeds=tuple(range(10_000, 10_000 + seeds))))  # warm-up
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(tasks):
        sampler.sample(SampleParams(seeds=tuple(range(i * seeds, (i + 1) * seeds))))
    print("done", flush=True)


def plain_processes(n: int, args: argparse.Namespace) -> float:
    """Seconds for ``n`` plain processes to sample the job's tasks between them, started together."""
    share = [args.tasks // n + (i < args.tasks % n) for i in range(n)]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--plain-worker", str(k), "--seeds", str(args.seeds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=compute_env(args.size),
            cwd=ROOT,
        )
        for k in share
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"plain sampling process exited with {p.wait()}")
        start = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != b"done":
                raise RuntimeError(f"plain sampling process exited with {p.wait()}")
        return time.perf_counter() - start
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def measure(work: Path, nats_url: str, n: int, args: argparse.Namespace) -> tuple[float, list[int]]:
    replicas = [start_replica(work, nats_url, args.size, i) for i in range(n)]
    try:
        await asyncio.gather(*(warm_up(r, args.seeds) for r in replicas))
        seconds = await run_job(nats_url, f"bench-replicas-{n}-{time.time_ns()}", args.tasks, args.seeds, n)
        return seconds, [r.tasks_done() for r in replicas]
    finally:
        for r in replicas:
            r.stop()


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="ganfolk-bench-replicas-"))
    broker = NatsServer(work / "nats")
    broker.start()
    plain: dict[int, float] = {}
    results: dict[int, tuple[float, list[int], str]] = {}
    try:
        # Rounds alternate 1 and 2 processes; each count keeps its fastest run, the one least
        # slowed by other work on the machine.
        for _ in range(args.rounds):
            for n in (1, 2):
                before = loadavg()
                plain[n] = min(plain.get(n, float("inf")), plain_processes(n, args))
                seconds, split = await measure(work, broker.url, n, args)
                if n not in results or seconds < results[n][0]:
                    results[n] = (seconds, split, f"{before} -> {loadavg()}")
    finally:
        broker.stop()
    samples = args.tasks * args.seeds
    print(
        f"sample stage: one job of {args.tasks} tasks x {args.seeds} seeds ({samples} samples), "
        f"random-weights StyleGAN2 at {args.size} px, one compute thread per process, {os.cpu_count()} CPUs, "
        f"fastest of {args.rounds} round{'s' if args.rounds > 1 else ''}"
    )
    rate = {n: samples / seconds for n, (seconds, _, _) in results.items()}
    plain_rate = {n: samples / seconds for n, seconds in plain.items()}
    for n, (seconds, split, load) in results.items():
        print(
            f"  {n} replica{'s' if n > 1 else ' '}  {seconds:7.2f} s  {rate[n]:6.2f} samples/s"
            f"   (plain processes {plain_rate[n]:6.2f} samples/s)   tasks per replica {split}"
            f"   load average {load}"
        )
    ceiling = plain_rate[2] / plain_rate[1]
    print(
        f"  2 replicas / 1 replica = {rate[2] / rate[1]:.2f}x  (goal >= 1.7; 2 plain processes / 1 = "
        f"{ceiling:.2f}x, the machine's own scaling at the time)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=16, help="sample tasks (shards) of the job")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per task")
    parser.add_argument("--size", type=int, default=64, help="random-weights output size, px")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the fastest run counts")
    parser.add_argument("--plain-worker", type=int, metavar="TASKS", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.plain_worker is not None:
        plain_worker(parsed.plain_worker, parsed.seeds)
    else:
        asyncio.run(main(parsed))
