"""Portrait job through the services (NATS + gRPC processes' code paths) vs the same stage
functions called in-process, and NATS task dispatch latency.

    python bench/pipeline.py [--jobs 5] [--dispatch 200]

Uses the tiny real checkpoints of tests/e2e (golden StyleGAN2/VQGAN/RRDBNet, a tiny CLIP),
a real nats-server, anvil and a local store. In-process and service jobs alternate (medians
are compared), so a shared machine's load changes land on both sides. Prints the ratio, the
dispatch p50/p99, and where a service job's extra time goes: per stage, the handlers'
in-process time, the stage's span on NATS (first task published -> last result event) and
the hand-off before it (the previous result event -> this stage's first task: the
coordinator's event handling, KV update and publish).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfolk.runtime import jetstream  # noqa: E402
from ganfolk.runtime.jetstream import StagePolicy  # noqa: E402
from ganfolk.runtime.service import load_definition  # noqa: E402
from ganfolk.runtime.settings import load_settings  # noqa: E402
from ganfolk.runtime.storage import open_store  # noqa: E402
from ganfolk.runtime.worker import StageHandler, StageWorker  # noqa: E402
from ganfolk.v1 import common_pb2, events_pb2, jobs_pb2, jobs_pb2_grpc, text_pb2  # noqa: E402
from services.coordinator import pipeline  # noqa: E402
from tests.e2e.stack import SERVICES, in_process, job_spec, service_process, tiny_models  # noqa: E402
from tests.fixtures.nats import NatsServer, free_port  # noqa: E402
from tests.fixtures.services import wait_serving  # noqa: E402


class LocalContext:
    """What a stage handler may call, without NATS."""

    def __init__(self, meta: common_pb2.TaskMeta) -> None:
        self.meta, self.stage, self.attempt = meta, meta.stage, 1

    async def heartbeat(self) -> None:
        return None

    async def cancelled(self) -> bool:
        return False

    async def progress(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def progress_throttled(self, *args: Any, **kwargs: Any) -> bool:
        return False


async def in_process_job(
    handlers: dict[str, StageHandler[Any]], spec: jobs_pb2.JobSpec, spans: dict[str, float]
) -> jobs_pb2.Job:
    """The coordinator's state machine driving the stage handlers directly.

    ``spans`` gets each stage's handler seconds (its tasks one after another).
    """
    job = jobs_pb2.Job(job_id=f"bench-{time.monotonic_ns()}", spec=spec, prompt=spec.prompt)
    tasks = pipeline.advance(job).new
    while tasks:
        for task in tasks:
            handler = handlers[task.stage]
            request = handler.request_type.FromString(task.payload)
            start = time.perf_counter()
            response = await handler.handle(request, LocalContext(request.meta))  # type: ignore[arg-type]
            spans[task.stage] = spans.get(task.stage, 0.0) + time.perf_counter() - start
            result = events_pb2.StageResult()
            getattr(result, handler.result_field).CopyFrom(response)
            meta = common_pb2.TaskMeta(job_id=job.job_id, task_id=task.task_id, stage=task.stage)
            pipeline.apply_event(job, events_pb2.StageEvent(meta=meta, attempt=1, result=result))
        tasks = pipeline.advance(job).new
    return job


class Timeline:
    """When each task was first published and its result event seen, from core NATS copies,
    and how long its handler ran inside the service's worker."""

    def __init__(self) -> None:
        self.published: dict[str, tuple[float, str]] = {}  # task id -> (time, stage)
        self.results: dict[str, float] = {}
        self.handled: dict[str, float] = {}  # task id -> handler seconds
        self.subs: list[Any] = []

    def time_handlers(self, mp: Any) -> None:
        """Time every stage handler of workers created from now on (they run in this process)."""
        original = StageWorker.__init__
        handled = self.handled

        def init(worker: StageWorker, nc: Any, handler: StageHandler[Any]) -> None:
            inner = handler.handle

            async def timed(request: Any, ctx: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await inner(request, ctx)
                finally:
                    handled[ctx.meta.task_id] = time.perf_counter() - start

            original(worker, nc, dataclasses.replace(handler, handle=timed))

        mp.setattr(StageWorker, "__init__", init)

    async def start(self, nc: Any) -> None:
        async def on_task(msg: Any) -> None:
            task_id = (msg.headers or {}).get("Nats-Msg-Id", "")
            if task_id and task_id not in self.published:
                self.published[task_id] = (time.perf_counter(), msg.subject.rsplit(".", 1)[-1])

        async def on_event(msg: Any) -> None:
            event = events_pb2.StageEvent.FromString(msg.data)
            if event.WhichOneof("outcome") == "result":
                self.results.setdefault(event.meta.task_id, time.perf_counter())

        self.subs = [
            await nc.subscribe(jetstream.task_subject("*"), cb=on_task),
            await nc.subscribe(jetstream.event_subject("*"), cb=on_event),
        ]

    def breakdown(
        self, job_id: str, submitted: float, finished: float
    ) -> dict[str, tuple[float, float, float]]:
        """Per stage of one job, in order: (hand-off before its first task, first task -> last
        result, its handlers' seconds); the last row, ``(end)``, is the last result -> the
        job's final Watch update."""
        stages: dict[str, list[float]] = {}
        for task_id, (t, stage) in self.published.items():
            if task_id.startswith(f"{job_id}.") and task_id in self.results:
                first_pub, last_res, handled = stages.get(stage, [t, self.results[task_id], 0.0])
                stages[stage] = [
                    min(first_pub, t),
                    max(last_res, self.results[task_id]),
                    handled + self.handled.get(task_id, 0.0),
                ]
        rows: dict[str, tuple[float, float, float]] = {}
        done = [submitted]
        for stage, (first_pub, last_res, handled) in sorted(stages.items(), key=lambda kv: kv[1][0]):
            before = max(r for r in done if r <= first_pub)
            rows[stage] = (first_pub - before, last_res - first_pub, handled)
            done.append(last_res)
        rows["(end)"] = (finished - max(done), 0.0, 0.0)
        return rows

    def idle(self, job_id: str, submitted: float, finished: float) -> float:
        """Seconds of the job with none of its tasks in flight: Submit, the coordinator's
        hand-offs between stages and the final Watch update, as they lie on the critical path."""
        spans = sorted(
            (t, self.results[task_id])
            for task_id, (t, _) in self.published.items()
            if task_id.startswith(f"{job_id}.") and task_id in self.results
        )
        busy, end = 0.0, submitted
        for start, stop in spans:
            if stop > end:
                busy += stop - max(start, end)
                end = stop
        return (finished - submitted) - busy


async def dispatch_latency(nats_url: str, n: int) -> list[float]:
    async def echo(request: text_pb2.PromptsRequest, ctx: Any) -> text_pb2.PromptsResponse:
        return text_pb2.PromptsResponse()

    nc = await jetstream.connect(nats_url, "bench")
    worker = StageWorker(
        nc, StageHandler("bench-echo", text_pb2.PromptsRequest, echo, "prompts", StagePolicy(fetch_timeout=1))
    )
    await worker.setup()
    runner = asyncio.create_task(worker.run())
    events = await nc.subscribe(jetstream.event_subject("bench"))
    latencies = []
    for i in range(n):
        meta = common_pb2.TaskMeta(
            job_id="bench", task_id=f"bench.{time.monotonic_ns()}.{i}", stage="bench-echo"
        )
        start = time.perf_counter()
        await jetstream.publish_task(
            nc.jetstream(), "bench-echo", text_pb2.PromptsRequest(meta=meta).SerializeToString(), meta.task_id
        )
        await events.next_msg(timeout=10)
        latencies.append(time.perf_counter() - start)
    await worker.stop(5)
    await runner
    await nc.drain()
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclasses.dataclass
class Comparison:
    """Alternating in-process and service jobs of one way of running the services."""

    label: str
    inproc: list[float] = dataclasses.field(default_factory=list)
    services: list[float] = dataclasses.field(default_factory=list)
    spans: list[dict[str, float]] = dataclasses.field(default_factory=list)
    breakdowns: list[dict[str, tuple[float, float, float]]] = dataclasses.field(default_factory=list)
    idle: list[float] = dataclasses.field(default_factory=list)

    def report(self, handlers_timed: bool) -> None:
        inproc, services = statistics.median(self.inproc), statistics.median(self.services)
        print(f"  {self.label}")
        print(
            f"    in-process stage functions   {inproc:7.3f} s/job  (median of {len(self.inproc)}, alternating)"
        )
        print(f"    services via NATS + store    {services:7.3f} s/job")
        print(f"    ratio services/in-process = {services / inproc:.2f}  (goal <= 1.15)")
        print(
            f"    no task in flight (Submit, coordinator hand-offs, final update): "
            f"{statistics.median(self.idle) * 1e3:.1f} ms of the service job"
        )
        print("    where a service job's time goes (ms, medians of the jobs):")
        print("      stage      in-process  handlers in services  on NATS (task -> result)  hand-off before")
        for name in self.breakdowns[0]:
            handoff, span, handled = (
                statistics.median(b[name][i] for b in self.breakdowns if name in b) * 1e3 for i in range(3)
            )
            local = statistics.median(s.get(name, 0.0) for s in self.spans) * 1e3
            shown = f"{handled:21.1f}" if handlers_timed and name != "(end)" else f"{'-':>21}"
            print(f"      {name:10s} {local:10.1f} {shown} {span:25.1f} {handoff:16.1f}")


async def compare(
    comparison: Comparison,
    handlers: dict[str, StageHandler[Any]],
    spec: jobs_pb2.JobSpec,
    stub: jobs_pb2_grpc.JobServiceStub,
    timeline: Timeline,
    jobs: int,
) -> None:
    async def one() -> tuple[str, float, float]:
        submitted = time.perf_counter()
        job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec))).job.job_id
        async for update in stub.Watch(jobs_pb2.WatchRequest(job_id=job_id)):
            last = update.job
        assert last.state == jobs_pb2.JOB_STATE_SUCCEEDED, last.error
        return job_id, submitted, time.perf_counter()

    await in_process_job(handlers, spec, {})  # warm-up
    await one()
    for _ in range(jobs):
        comparison.spans.append({})
        t0 = time.perf_counter()
        job = await in_process_job(handlers, spec, comparison.spans[-1])
        comparison.inproc.append(time.perf_counter() - t0)
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
        job_id, submitted, finished = await one()
        comparison.services.append(finished - submitted)
        comparison.breakdowns.append(timeline.breakdown(job_id, submitted, finished))
        comparison.idle.append(timeline.idle(job_id, submitted, finished))


@contextlib.asynccontextmanager
async def service_processes(
    models: Any, nats_url: str, store: Path, rpc_url: str, logs: Path
) -> AsyncIterator[jobs_pb2_grpc.JobServiceStub]:
    """Every service and the coordinator as its own ``ganfolk serve`` process, as deployed."""
    ports = {name: free_port() for name in (*SERVICES, "coordinator")}
    procs = [
        service_process(
            name,
            models,
            nats_url,
            store,
            rpc_url,
            logs / f"{name}.log",
            GANFOLK_GRPC_PORT=str(port),
            GANFOLK_COORDINATOR_SWEEP_INTERVAL_S="0.5",
        )
        for name, port in ports.items()
    ]
    try:
        channels = {name: grpc.aio.insecure_channel(f"127.0.0.1:{port}") for name, port in ports.items()}
        for channel in channels.values():
            waiter = asyncio.create_task(wait_serving(channel, timeout=300))
            while not waiter.done():
                if any(proc.poll() is not None for proc in procs):
                    waiter.cancel()
                    raise RuntimeError(f"a service process exited while starting; see the logs in {logs}")
                await asyncio.sleep(0.2)
            waiter.result()
        yield jobs_pb2_grpc.JobServiceStub(channels["coordinator"])
        for channel in channels.values():
            await channel.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def main(args: argparse.Namespace) -> None:
    import pytest

    from services.mint.anvil import Anvil

    work = Path(tempfile.mkdtemp(prefix="ganfolk-bench-"))
    models = tiny_models(work)
    broker = NatsServer(work / "nats")
    broker.start()
    chain = Anvil.start(log_dir=work)
    spec = job_spec(mint=True)
    load_before = os.getloadavg()
    comparisons: list[Comparison] = []
    try:
        # In-process: every service's core and stage handler, no NATS, no gRPC.
        mp = pytest.MonkeyPatch()
        for key, value in models.env.items():
            mp.setenv(key, value)
        mp.setenv("GANFOLK_MINT_RPC_URL", chain.url)
        mp.setenv("GANFOLK_STATE_DIR", str(work / "state"))
        mp.delenv("GANFOLK_TEXT_LLM_BASE_URL", raising=False)
        store = open_store(work / "objects-inproc")
        handlers: dict[str, StageHandler[Any]] = {}
        for name in SERVICES:
            definition = load_definition(name)
            settings = load_settings(
                definition.settings_cls, service=name, store_url=str(work / "objects-inproc")
            )
            core = definition.load(settings)
            for handler in definition.stages(core, store, settings):
                handlers[handler.stage] = handler
        nc = await jetstream.connect(broker.url, "bench-timeline")
        timeline = Timeline()
        await timeline.start(nc)

        # Services: the same stages behind NATS workers, driven by the coordinator, all in this
        # process (one event loop and one GIL for all of them) ...
        timeline.time_handlers(mp)
        async with in_process(mp, models, broker.url, work / "objects", chain.url) as stub:
            assert stub is not None
            comparisons.append(
                Comparison("services and coordinator in this process (one event loop, one GIL)")
            )
            await compare(comparisons[-1], handlers, spec, stub, timeline, args.jobs)
        # ... and each in its own process, as deployed.
        if not args.one_process:
            async with service_processes(models, broker.url, work / "objects", chain.url, work) as stub:
                comparisons.append(Comparison("one process per service and for the coordinator, as deployed"))
                await compare(comparisons[-1], handlers, spec, stub, timeline, args.jobs)
        await nc.drain()
        mp.undo()
        latencies = await dispatch_latency(broker.url, args.dispatch)
    finally:
        chain.stop()
        broker.stop()
    load_after = os.getloadavg()

    stages = ", ".join(sorted(handlers))
    print(
        f"portrait job ({spec.num_samples} samples, refine {spec.refine.iterations} it, mint), stages: {stages}"
    )
    print(
        f"  load average {' '.join(f'{v:.2f}' for v in load_before)} -> {' '.join(f'{v:.2f}' for v in load_after)}"
        f" on {os.cpu_count()} CPUs"
    )
    for i, comparison in enumerate(comparisons):
        comparison.report(handlers_timed=i == 0)
    print(f"task dispatch (publish -> result event, no-op handler, {len(latencies)} tasks)")
    print(
        f"  p50 {pct(latencies, 0.5) * 1e3:.1f} ms   p99 {pct(latencies, 0.99) * 1e3:.1f} ms"
        f"   mean {statistics.mean(latencies) * 1e3:.1f} ms  (goal p99 <= 5 ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument(
        "--one-process", action="store_true", help="skip the run with one process per service"
    )
    parser.add_argument("--dispatch", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
