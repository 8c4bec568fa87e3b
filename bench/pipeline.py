"""Portrait job through the services (NATS + gRPC processes' code paths) vs the same stage
functions called in-process, and NATS task dispatch latency.

    python bench/pipeline.py [--jobs 2] [--dispatch 200]

Uses the tiny real checkpoints of tests/e2e (golden StyleGAN2/VQGAN/RRDBNet, a tiny CLIP),
a real nats-server, anvil and a local store. Prints ratios measured in this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfolk.runtime import jetstream  # noqa: E402
from ganfolk.runtime.jetstream import StagePolicy  # noqa: E402
from ganfolk.runtime.service import load_definition  # noqa: E402
from ganfolk.runtime.settings import load_settings  # noqa: E402
from ganfolk.runtime.storage import open_store  # noqa: E402
from ganfolk.runtime.worker import StageHandler, StageWorker  # noqa: E402
from ganfolk.v1 import common_pb2, events_pb2, jobs_pb2, text_pb2  # noqa: E402
from services.coordinator import pipeline  # noqa: E402
from tests.e2e.stack import SERVICES, in_process, job_spec, tiny_models  # noqa: E402
from tests.fixtures.nats import NatsServer  # noqa: E402


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


async def in_process_job(handlers: dict[str, StageHandler[Any]], spec: jobs_pb2.JobSpec) -> jobs_pb2.Job:
    """The coordinator's state machine driving the stage handlers directly."""
    job = jobs_pb2.Job(job_id=f"bench-{time.monotonic_ns()}", spec=spec, prompt=spec.prompt)
    tasks = pipeline.advance(job).new
    while tasks:
        for task in tasks:
            handler = handlers[task.stage]
            request = handler.request_type.FromString(task.payload)
            response = await handler.handle(request, LocalContext(request.meta))  # type: ignore[arg-type]
            result = events_pb2.StageResult()
            getattr(result, handler.result_field).CopyFrom(response)
            meta = common_pb2.TaskMeta(job_id=job.job_id, task_id=task.task_id, stage=task.stage)
            pipeline.apply_event(job, events_pb2.StageEvent(meta=meta, attempt=1, result=result))
        tasks = pipeline.advance(job).new
    return job


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


async def main(args: argparse.Namespace) -> None:
    import pytest

    from services.mint.anvil import Anvil

    work = Path(tempfile.mkdtemp(prefix="ganfolk-bench-"))
    models = tiny_models(work)
    broker = NatsServer(work / "nats")
    broker.start()
    chain = Anvil.start(log_dir=work)
    spec = job_spec(mint=True)
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
        await in_process_job(handlers, spec)  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.jobs):
            job = await in_process_job(handlers, spec)
            assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
        inproc = (time.perf_counter() - t0) / args.jobs

        # Services: the same stages behind NATS workers, driven by the coordinator.
        async with in_process(mp, models, broker.url, work / "objects", chain.url) as stub:
            assert stub is not None

            async def one() -> None:
                job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec))).job.job_id
                async for update in stub.Watch(jobs_pb2.WatchRequest(job_id=job_id)):
                    last = update.job
                assert last.state == jobs_pb2.JOB_STATE_SUCCEEDED, last.error

            await one()  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.jobs):
                await one()
            services = (time.perf_counter() - t0) / args.jobs
        mp.undo()
        latencies = await dispatch_latency(broker.url, args.dispatch)
    finally:
        chain.stop()
        broker.stop()

    stages = ", ".join(sorted(handlers))
    print(
        f"portrait job ({spec.num_samples} samples, refine {spec.refine.iterations} it, mint), stages: {stages}"
    )
    print(f"  in-process stage functions   {inproc:7.2f} s/job")
    print(
        f"  services via NATS + store    {services:7.2f} s/job   ratio services/in-process = {services / inproc:.2f}"
    )
    print(f"task dispatch (publish -> result event, no-op handler, {len(latencies)} tasks)")
    print(
        f"  p50 {pct(latencies, 0.5) * 1e3:.1f} ms   p99 {pct(latencies, 0.99) * 1e3:.1f} ms   mean {statistics.mean(latencies) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dispatch", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
