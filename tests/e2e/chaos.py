"""A chaos run: small portrait jobs through the stack while its processes die.

Every stage service and the coordinator run as ``ganfolk serve`` processes (tiny real
models, as the other end-to-end tests use), beside a real nats-server, an S3 API server
(moto, MinIO's stand-in) and anvil, all on loopback. While the jobs run, the driver
``kill -9``s a random stage service every few seconds and restarts it, kills nats-server
(``kill -9``, same port and JetStream store directory) and starts it again, takes the S3
API away for a while, and kills and restarts the coordinator. Then it counts what came
out: jobs succeeded, failed or stuck, sample objects beyond the samples asked for, tokens
minted per job (``Minted`` events on the chain), the longest time a job made no progress,
and each process's peak resident memory.

moto keeps its objects in memory only (stopping it would lose them, which no MinIO
outage does), so the S3 outage is a network one: the services reach moto through a TCP
proxy in this process, and the outage stops the proxy (its port refuses connections and
its open connections are reset).

``bench/chaos.py`` runs the full plan; ``tests/e2e/test_chaos.py`` a short one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NATS
from nats.js.api import DeliverPolicy
from web3 import Web3

from ganfolk.runtime import catalog, jetstream
from ganfolk.runtime.storage import open_store
from ganfolk.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc, vqgan_pb2
from services.mint.anvil import Anvil, rpc
from tests.e2e.stack import SERVICES, job_spec, service_process, tiny_models
from tests.fixtures.nats import NatsServer, free_port, wait_port
from tests.fixtures.s3 import S3Server, start_moto_server
from tests.fixtures.services import wait_serving

S = jobs_pb2
FINISHED = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)
MINTED_TOPIC = "0x" + Web3.keccak(text="Minted(bytes32,uint256,address,string)").hex().removeprefix("0x")


@dataclass
class Plan:
    """What the driver does, and the settings the stack runs with."""

    jobs: int = 20
    # Job size: samples (4 per sample task) and VQGAN iterations. Tasks of a few seconds make a
    # kill more likely to land mid-task, where it tests a redelivery and not only a restart.
    samples: int = 8
    refine_iterations: int = 3
    # Jobs go in one at a time this far apart, so faults land on jobs at every stage.
    submit_every_s: float = 3.0
    # A random stage service is killed (and restarted) every this many seconds, +-50 %.
    kill_every_s: float = 8.0
    nats_restarts: int = 2
    s3_outage_s: float = 10.0
    coordinator_kills: int = 1
    # Jobs not finished this long after the first submission count as stuck.
    timeout_s: float = 900.0
    # GANFOLK_* settings of every service and the coordinator (e.g. a short ack wait).
    env: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    # The one-off faults (broker, store, coordinator) are spread over this many seconds from
    # the first submission; unset, over the submission window.
    faults_within_s: float | None = None

    @property
    def window_s(self) -> float:
        return self.faults_within_s or self.jobs * self.submit_every_s


@dataclass
class JobWatch:
    """What the driver saw of one job: its progress fingerprints over time."""

    key: str
    job_id: str = ""
    submitted: float = 0.0
    last_change: float = 0.0
    fingerprint: tuple[Any, ...] = ()
    max_stall: float = 0.0
    stall_at: str = ""
    job: jobs_pb2.Job | None = None

    @property
    def finished(self) -> bool:
        return self.job is not None and self.job.state in FINISHED

    def observe(self, job: jobs_pb2.Job, now: float) -> None:
        """A changed fingerprint is progress; the gap since the last change is a stall."""
        self.job = job
        print_ = tuple(
            (s.stage, s.state, round(s.percent, 3), len(s.tasks_done), s.images_total) for s in job.stages
        )
        fingerprint = (job.state, print_)
        if fingerprint != self.fingerprint:
            self.note_gap(now, job)
            self.fingerprint, self.last_change = fingerprint, now

    def note_gap(self, now: float, job: jobs_pb2.Job | None) -> None:
        gap = now - self.last_change
        if gap > self.max_stall:
            self.max_stall = gap
            stage = S.Stage.Name(job.stage) if job is not None else "?"
            self.stall_at = f"until {stage} moved at t={now:.0f}s"


@dataclass
class Report:
    plan: Plan
    jobs: list[JobWatch]
    faults: list[tuple[float, str]]
    duplicates: int
    missing: int
    tokens: dict[str, int]
    minted_total: int
    redelivered: int
    peak_rss_kb: dict[str, int]
    exits: list[tuple[str, int]]
    wall_s: float
    load: tuple[tuple[float, ...], tuple[float, ...]]

    @property
    def succeeded(self) -> int:
        return sum(1 for j in self.jobs if j.job is not None and j.job.state == S.JOB_STATE_SUCCEEDED)

    @property
    def failed(self) -> int:
        return sum(1 for j in self.jobs if j.job is not None and j.finished) - self.succeeded

    @property
    def stuck(self) -> int:
        return sum(1 for j in self.jobs if not j.finished)

    @property
    def max_stall(self) -> float:
        return max((j.max_stall for j in self.jobs), default=0.0)

    def fault_counts(self) -> Counter[str]:
        return Counter(what.split(" ")[0] for _, what in self.faults)

    def lines(self) -> list[str]:
        n = len(self.jobs)
        counts = Counter(self.tokens.get(j.job_id, 0) for j in self.jobs)
        worst = max(self.jobs, key=lambda j: j.max_stall) if self.jobs else None
        kills = Counter(what.split(" ")[1] for _, what in self.faults if what.startswith("kill-9 "))
        busy = sum(1 for _, what in self.faults if what.endswith("(busy)"))
        out = [
            f"chaos run: {n} jobs ({self.plan.samples} samples, {self.plan.refine_iterations} VQGAN"
            f" iterations each), {self.wall_s:.0f} s wall, load average "
            f"{' '.join(f'{v:.2f}' for v in self.load[0])} -> {' '.join(f'{v:.2f}' for v in self.load[1])}",
            f"  settings: {' '.join(f'{k}={v}' for k, v in sorted(self.plan.env.items())) or 'defaults'}",
            "  faults: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.fault_counts().items()))
            + f" (kill -9 by service: {', '.join(f'{k} {v}' for k, v in sorted(kills.items()))};"
            + f" {busy} of them while its stage had a task delivered and unacked)",
            "  fault times (s): " + ", ".join(f"{t:.0f} {what}" for t, what in self.faults),
            f"  jobs succeeded {self.succeeded} / failed {self.failed} / stuck {self.stuck}",
            f"  duplicate sample objects {self.duplicates} (missing {self.missing})",
            "  tokens per job: "
            + ", ".join(f"{c} token{'s' if c != 1 else ''}: {k} jobs" for c, k in sorted(counts.items()))
            + f"; Minted events in all {self.minted_total}",
            f"  tasks whose result came from a redelivery: {self.redelivered}",
            "  processes that exited by themselves (restarted): "
            + (", ".join(f"{name} (exit {rc})" for name, rc in self.exits) or "none"),
            f"  max stall {self.max_stall:.1f} s"
            + (f" (job {worst.key}, {worst.stall_at})" if worst and worst.stall_at else ""),
            "  peak RSS (VmHWM, MiB): "
            + ", ".join(f"{k} {v / 1024:.0f}" for k, v in sorted(self.peak_rss_kb.items())),
        ]
        for j in self.jobs:
            if j.job is not None and j.finished and j.job.state != S.JOB_STATE_SUCCEEDED:
                out.append(f"  failed {j.key} ({j.job_id}): {j.job.error}")
            elif not j.finished:
                where = S.Stage.Name(j.job.stage) if j.job is not None else "never submitted"
                out.append(f"  stuck {j.key} ({j.job_id}) at {where}")
        return out


class TcpProxy:
    """A loopback TCP forwarder; :meth:`stop` is an outage of what is behind it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and reset open ones, as a server that went away does."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                # linger 0: close sends RST, so the peer sees a reset, not a clean end.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            with contextlib.suppress(OSError):
                conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._conns.discard(s)


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set size of a live process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Stack:
    """The processes of the run; the driver kills and restarts them."""

    def __init__(self, work: Path, plan: Plan) -> None:
        self.work = work
        self.plan = plan
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        (work / "models").mkdir(parents=True, exist_ok=True)
        self.models = tiny_models(work / "models")
        self.nats = NatsServer(work / "nats")
        self.s3: S3Server | None = None
        self.proxy: TcpProxy | None = None
        self.chain: Anvil | None = None
        self.ports = {name: free_port() for name in (*SERVICES, "coordinator")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.peak_kb: Counter[str] = Counter()
        self.bucket = "chaos"
        # Names the driver is killing and restarting right now (the supervisor leaves them be).
        self.busy: set[str] = set()
        # Processes that exited without being killed, with their exit codes.
        self.exits: list[tuple[str, int]] = []

    @property
    def store_url(self) -> str:
        assert self.s3 is not None and self.proxy is not None
        return (
            f"s3://{self.s3.access_key}:{self.s3.secret_key}@{self.bucket}"
            f"?endpoint=127.0.0.1:{self.proxy.port}&secure=false"
        )

    def start_infra(self) -> None:
        self.nats.start()
        self.s3 = start_moto_server(self.logs)
        self.proxy = TcpProxy(int(self.s3.endpoint.rsplit(":", 1)[1]))
        self.proxy.start()
        self.chain = Anvil.start(log_dir=self.logs)

    def start(self, name: str) -> None:
        assert self.chain is not None
        env = {
            "GANFOLK_GRPC_PORT": str(self.ports[name]),
            "GANFOLK_STORE_URL": self.store_url,
            # The curated name table instead of names-dataset's 2 GB, loaded again by every
            # restarted text process: the run is about delivery, not about names.
            "GANFOLK_TEXT_NAMES_DATASET": "0",
            "GANFOLK_TEXT_WIKIPEDIA_API_URL": "",  # loopback only
            "GANFOLK_LOG_LEVEL": "INFO",
            **self.plan.env,
        }
        log = self.logs / f"{name}.log"
        self.procs[name] = service_process(
            name, self.models, self.nats.url, self.work / "objects", self.chain.url, log, **env
        )

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        self.sample_rss()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def supervise(self) -> None:
        """Restart a service that exited by itself, as a supervisor (systemd, Kubernetes) would."""
        for name, proc in list(self.procs.items()):
            if name not in self.busy and proc.poll() is not None:
                self.exits.append((name, int(proc.returncode)))
                self.start(name)

    def kill_nats(self) -> None:
        assert self.nats.proc is not None
        self.sample_rss()
        self.nats.proc.send_signal(signal.SIGKILL)
        self.nats.proc.wait(30)
        self.nats.proc = None

    def sample_rss(self) -> None:
        pids = {name: proc.pid for name, proc in self.procs.items() if proc.poll() is None}
        if self.nats.proc is not None:
            pids["nats-server"] = self.nats.proc.pid
        if self.s3 is not None:
            pids["s3 (moto)"] = self.s3.process.pid
        if self.chain is not None:
            pids["anvil"] = self.chain.process.pid
        for name, pid in pids.items():
            self.peak_kb[name] = max(self.peak_kb[name], vm_hwm_kb(pid))

    def stop(self) -> None:
        self.sample_rss()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.proxy is not None:
            self.proxy.stop()
        if self.s3 is not None and self.s3.process.poll() is None:
            self.s3.process.terminate()
            self.s3.process.wait(15)
        if self.chain is not None:
            self.chain.stop()
        self.nats.stop()


async def wait_all_serving(stack: Stack, names: list[str], timeout: float) -> None:
    for name in names:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports[name]}") as channel:
            waiter = asyncio.create_task(wait_serving(channel, timeout=timeout))
            while not waiter.done():
                if stack.procs[name].poll() is not None:
                    waiter.cancel()
                    raise RuntimeError(f"{name} exited while starting; see {stack.logs / (name + '.log')}")
                await asyncio.sleep(0.2)
            waiter.result()


class Driver:
    """Submits the jobs, watches their progress and injects the faults."""

    def __init__(self, stack: Stack, plan: Plan) -> None:
        self.stack = stack
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports['coordinator']}")
        self.stub = jobs_pb2_grpc.JobServiceStub(self.channel)
        self.jobs = [JobWatch(f"chaos-{plan.seed}-{i}") for i in range(plan.jobs)]
        self.faults: list[tuple[float, str]] = []
        self.t0 = 0.0
        self.done = asyncio.Event()
        self._nc: NATS | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def fault(self, what: str) -> None:
        self.faults.append((self.now(), what))

    async def submit_all(self) -> None:
        for i, watch in enumerate(self.jobs):
            await asyncio.sleep(max(0.0, i * self.plan.submit_every_s - self.now()))
            iterations = self.plan.refine_iterations
            spec = job_spec(
                seed=1000 * self.plan.seed + i,
                num_samples=self.plan.samples,
                sample_task_size=4,
                refine=vqgan_pb2.RefineParams(
                    size=32, iterations=iterations, cutn=4, seed=1, snapshot_every=max(1, iterations // 3)
                ),
            )
            # The key makes a retried Submit (the coordinator may be down) return the same job.
            request = jobs_pb2.SubmitRequest(spec=spec, idempotency_key=watch.key)
            while True:
                try:
                    reply = await self.stub.Submit(request, timeout=10)
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.5)
            watch.job_id, watch.submitted = reply.job.job_id, self.now()
            watch.last_change = watch.submitted
            watch.observe(reply.job, watch.submitted)

    async def watch_jobs(self) -> None:
        deadline = self.plan.timeout_s
        while self.now() < deadline:
            self.stack.sample_rss()
            self.stack.supervise()
            pending = [j for j in self.jobs if not j.finished]
            if not pending:
                break
            for watch in pending:
                if not watch.job_id:
                    continue
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await self.stub.Get(jobs_pb2.GetRequest(job_id=watch.job_id), timeout=5)
                    watch.observe(reply.job, self.now())
            await asyncio.sleep(0.5)
        end = self.now()
        for watch in self.jobs:
            if watch.job_id and not watch.finished:
                watch.note_gap(end, watch.job)  # a stuck job's stall runs to the end
        self.done.set()

    async def _sleep_until(self, t: float) -> bool:
        """Sleep until ``t`` seconds into the run; False when the jobs finished first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), max(0.0, t - self.now()))
        return not self.done.is_set()

    async def busy_services(self) -> list[str]:
        """Stage services with a task delivered and not yet acked (none while NATS is away):
        a kill of one of them tests a redelivery, not only a restart."""
        try:
            js = (await self.nats()).jetstream()
        except Exception:  # NATS is away as the driver first connects
            return []
        busy = []
        for name in SERVICES:
            for stage in catalog.entry(name).stages:
                with contextlib.suppress(Exception):  # no consumer yet, or NATS is away
                    info = await js.consumer_info(
                        jetstream.TASKS_STREAM, jetstream.consumer_name(stage), timeout=2
                    )
                    if info.num_ack_pending:
                        busy.append(name)
                        break
        return busy

    async def nats(self) -> NATS:
        if self._nc is None:
            self._nc = await jetstream.connect(self.stack.nats.url, "chaos-driver")
        return self._nc

    async def random_kills(self) -> None:
        t = 2.0
        while True:
            t += self.plan.kill_every_s * self.rng.uniform(0.5, 1.5)
            if not await self._sleep_until(t):
                return
            # A crash hits a running process: the victim is drawn among the services up now
            # (one still starting after its last kill has nothing in flight to lose).
            up = [name for name in SERVICES if await self.serving(name)]
            if not up:
                continue
            name = self.rng.choice(up)
            busy = name in await self.busy_services()
            await self.kill_and_restart(name, f"kill-9 {name}" + (" (busy)" if busy else ""))

    async def serving(self, name: str) -> bool:
        """Whether the service's gRPC health check says SERVING."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.stack.ports[name]}") as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2
                )
            except grpc.aio.AioRpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def kill_and_restart(self, name: str, what: str) -> None:
        self.stack.busy.add(name)
        try:
            await asyncio.to_thread(self.stack.kill, name)
            self.fault(what)
            self.stack.start(name)
        finally:
            self.stack.busy.discard(name)

    async def one_offs(self) -> None:
        w = self.plan.window_s
        plan: list[tuple[float, str]] = []
        for k in range(self.plan.nats_restarts):
            plan.append((w * (0.2 + 0.5 * k / max(1, self.plan.nats_restarts - 1)), "nats"))
        if self.plan.s3_outage_s > 0:
            plan.append((w * 0.4, "s3"))
        for k in range(self.plan.coordinator_kills):
            plan.append((w * (0.55 + 0.1 * k), "coordinator"))
        for at, what in sorted(plan):
            if not await self._sleep_until(at):
                return
            if what == "nats":
                await asyncio.to_thread(self.stack.kill_nats)
                self.fault("nats-restart (kill -9, same store)")
                await asyncio.to_thread(self.stack.nats.start)
            elif what == "s3":
                assert self.stack.proxy is not None
                self.stack.proxy.stop()
                self.fault(f"s3-outage {self.plan.s3_outage_s:.0f} s")
                await asyncio.sleep(self.plan.s3_outage_s)
                self.stack.proxy.start()
            else:
                await self.kill_and_restart("coordinator", "coordinator-kill-9")

    async def run(self) -> None:
        self.t0 = time.monotonic()
        submit = asyncio.create_task(self.submit_all())
        chaos = [asyncio.create_task(self.random_kills()), asyncio.create_task(self.one_offs())]
        await self.watch_jobs()
        submit.cancel()
        for task in chaos:
            # A fault under way finishes (the S3 proxy comes back, a killed process restarts).
            await task
        with contextlib.suppress(asyncio.CancelledError):
            await submit
        await self.channel.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()


def count_outputs(stack: Stack, jobs: list[JobWatch]) -> tuple[int, int]:
    """Sample objects beyond, and short of, the samples each job asked for."""
    store = open_store(stack.store_url)
    extra = missing = 0
    try:
        for watch in jobs:
            if not watch.job_id or watch.job is None:
                continue
            found = len(list(store.list(f"jobs/{watch.job_id}/samples/")))
            expected = watch.job.spec.num_samples
            extra += max(0, found - expected)
            missing += max(0, expected - found) if watch.finished else 0
    finally:
        store.close()
    return extra, missing


def count_tokens(chain: Anvil, jobs: list[JobWatch]) -> tuple[dict[str, int], int]:
    """Minted events on the chain per job (the job id is the mint's idempotency key)."""
    logs = rpc(
        chain.url, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest", "topics": [MINTED_TOPIC]}]
    )
    by_key = Counter(str(entry["topics"][1]).lower() for entry in logs)
    tokens = {}
    for watch in jobs:
        if watch.job_id:
            key = "0x" + Web3.keccak(text=watch.job_id).hex().removeprefix("0x")
            tokens[watch.job_id] = by_key.get(key.lower(), 0)
    return tokens, len(logs)


async def count_redelivered(nats_url: str) -> int:
    """Task results published by a later delivery than the first (the events stream keeps them)."""
    nc = await jetstream.connect(nats_url, "chaos-driver")
    try:
        info = await nc.jetstream().stream_info(jetstream.EVENTS_STREAM)
        total = int(info.state.messages or 0)
        if not total:
            return 0
        sub = await nc.jetstream().subscribe(
            "ganfolk.events.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        redelivered = 0
        try:
            for _ in range(total):
                msg = await sub.next_msg(timeout=30)
                event = events_pb2.StageEvent.FromString(msg.data)
                if event.WhichOneof("outcome") == "result" and event.attempt >= 2:
                    redelivered += 1
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return redelivered
    finally:
        await nc.drain()


async def run(plan: Plan, work: Path, progress: Callable[[str], None] = lambda _: None) -> Report:
    """Start the stack, run the plan against it, stop everything, count what came out."""
    import os

    stack = Stack(work, plan)
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        await asyncio.to_thread(stack.start_infra)
        for name in (*SERVICES, "coordinator"):
            stack.start(name)
        await wait_all_serving(stack, [*SERVICES, "coordinator"], timeout=600)
        progress(f"stack serving after {time.monotonic() - started:.0f} s; logs in {stack.logs}")
        driver = Driver(stack, plan)
        await driver.run()
        progress(f"jobs settled after {driver.now():.0f} s")
        assert stack.nats.proc is not None and stack.chain is not None
        wait_port(stack.nats.port)
        duplicates, missing = await asyncio.to_thread(count_outputs, stack, driver.jobs)
        tokens, minted = await asyncio.to_thread(count_tokens, stack.chain, driver.jobs)
        redelivered = await count_redelivered(stack.nats.url)
        wall = time.monotonic() - started
    finally:
        await asyncio.to_thread(stack.stop)
    return Report(
        plan,
        driver.jobs,
        driver.faults,
        duplicates,
        missing,
        tokens,
        minted,
        redelivered,
        dict(stack.peak_kb),
        stack.exits,
        wall,
        (load_before, os.getloadavg()),
    )
