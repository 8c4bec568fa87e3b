"""Local stack: nats-server with JetStream, an object store and services as processes.

``ganfolk up`` starts them detached (state, logs and a ``stack.json`` under the state
directory), waits until every service's gRPC health check reports SERVING, and
``ganfolk down`` stops them with SIGTERM (the services together, then the store and the broker
together) and SIGKILLs only those that outlive the wait, naming them.

NATS runs with the generated authorization (:mod:`ganfolk.runtime.nats_auth`) and passwords
made afresh by every ``ganfolk up``: its configuration (``nats.conf``) and the logins of the
users that are not services (``nats-logins.json``: ``train``, ``viewer``) are written owner-only
into the state directory. ``up`` creates the JetStream topology as the coordinator before any
service starts, and hands each service its own user. A training run and ``ganfolk train
list|status|watch`` pointed at this NATS find their login there (:func:`nats_login`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import nats
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from ganfolk.runtime import catalog, jetstream, nats_auth, redact, train_topology
from ganfolk.runtime.service import SideProcess, load_definition
from ganfolk.runtime.settings import ConfigError, Settings, load_settings

NATS_PORT = 4222
# Where `ganfolk up` keeps the gallery's sign-in token when GANFOLK_GALLERY_AUTH_TOKEN is unset.
GALLERY_TOKEN = "gallery-token"
S3_ACCESS_KEY = "ganfolk-local"
S3_SECRET_KEY = "ganfolk-local-secret"
# How long a SIGKILLed process may take to disappear.
KILL_WAIT_S = 5.0
# nats-server's configuration with this run's passwords, and the logins local clients read.
NATS_CONFIG = "nats.conf"
NATS_LOGINS = "nats-logins.json"
# The users whose logins local clients (a training run, `ganfolk train list`) may read.
CLIENT_USERS = (nats_auth.TRAIN, nats_auth.VIEWER)
# Credentials from the caller's shell that must not reach the stack's processes.
NATS_LOGIN_VARIABLES = ("GANFOLK_NATS_USER", "GANFOLK_NATS_PASSWORD", "GANFOLK_NATS_CREDS_FILE")


@dataclass
class Proc:
    name: str
    pid: int
    log: str
    port: int = 0
    # A web app's address (the gallery), printed by `ganfolk up`.
    url: str = ""


@dataclass
class Stack:
    state_dir: str
    nats_url: str
    store_url: str
    processes: list[Proc] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"state: {self.state_dir}", f"nats:  {self.nats_url}", f"store: {self.store_url}"]
        logins = Path(self.state_dir) / NATS_LOGINS
        if logins.exists():
            lines.append(
                f"nats logins of `ganfolk train` runs and list|status|watch: {logins} "
                "(found there for this nats address; GANFOLK_STATE_DIR names another state directory)"
            )
        for p in self.processes:
            where = f"127.0.0.1:{p.port}" if p.port else ""
            lines.append(f"  {p.name:<12} pid {p.pid:<8} {where:<18} log {p.log}")
        for p in self.processes:
            if p.url:
                lines.append(
                    f"{p.name}: {p.url}  (sign in with the token in {Path(self.state_dir) / GALLERY_TOKEN})"
                )
        return "\n".join(lines)


def state_path(state_dir: str | None) -> Path:
    return Path(state_dir or os.environ.get("GANFOLK_STATE_DIR", ".state")).resolve()


def available_services() -> list[str]:
    """Services whose code is part of this checkout."""
    return [name for name, e in catalog.SERVICES.items() if importlib.util.find_spec(e.module) is not None]


def side_processes(services: list[str]) -> list[SideProcess]:
    """The local processes the given services declare, each once, in service order."""
    seen: dict[str, SideProcess] = {}
    for name in services:
        for side in load_definition(name).side_processes:
            seen.setdefault(side.setting, side)
    return list(seen.values())


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pick_port(preferred: int) -> int:
    return preferred if _port_free(preferred) else _free_port()


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        if not _port_free(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s; see {log}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # A new session: the stack outlives this command and Ctrl-C in the shell.
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _health(port: int) -> str:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError as exc:
        return f"unreachable ({exc.code().name})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def up(
    services: list[str] | None = None,
    state_dir: str | None = None,
    store: str = "file",
    timeout: float = 180.0,
    allow_random_weights: bool = False,
) -> Stack:
    """Start the stack and wait for health; on failure, stop what was started."""
    state = state_path(state_dir)
    manifest = state / "stack.json"
    if manifest.exists():
        old = _load(manifest)
        if any(_alive(p.pid) for p in old.processes):
            raise ConfigError(f"a stack is already running from {state}; run `ganfolk down` first")
    chosen = services or available_services()
    missing = [s for s in chosen if s not in available_services()]
    if missing:
        raise ConfigError(
            f"not part of this build: {', '.join(missing)}; available: {', '.join(available_services())}"
        )
    logs = state / "logs"
    nats_bin = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(nats_bin).exists():
        raise ConfigError("nats-server is not installed; run `make setup`")

    stack = Stack(str(state), "", "")
    try:
        nats_port = _pick_port(NATS_PORT)
        passwords = nats_auth.generate_passwords()
        config = state / NATS_CONFIG
        _write_private(
            config,
            nats_auth.render_config(
                passwords, listen=f"127.0.0.1:{nats_port}", store_dir=str(state / "nats")
            ),
        )
        proc = _spawn([nats_bin, "-c", str(config)], logs / "nats.log")
        stack.processes.append(Proc("nats-server", proc.pid, str(logs / "nats.log"), nats_port))
        _wait_port(nats_port, proc, logs / "nats.log", 20)
        stack.nats_url = f"nats://127.0.0.1:{nats_port}"
        asyncio.run(_own_topology(stack.nats_url, passwords[nats_auth.COORDINATOR]))
        logins = {"nats_url": stack.nats_url, "users": {u: passwords[u] for u in CLIENT_USERS}}
        _write_private(state / NATS_LOGINS, json.dumps(logins, indent=2))

        env = {**os.environ, "GANFOLK_NATS_URL": stack.nats_url, "GANFOLK_STATE_DIR": str(state)}
        for variable in NATS_LOGIN_VARIABLES:
            env.pop(variable, None)
        if store == "s3":
            s3_port = _free_port()
            proc = _spawn(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)], logs / "s3.log"
            )
            stack.processes.append(Proc("s3 (moto)", proc.pid, str(logs / "s3.log"), s3_port))
            _wait_port(s3_port, proc, logs / "s3.log", 60)
            stack.store_url = f"s3://ganfolk?endpoint=127.0.0.1:{s3_port}&secure=false"
            env.update(GANFOLK_S3_ACCESS_KEY=S3_ACCESS_KEY, GANFOLK_S3_SECRET_KEY=S3_SECRET_KEY)
        else:
            stack.store_url = str(state / "objects")
        env["GANFOLK_STORE_URL"] = stack.store_url
        # What the chosen services need beside them (a local LLM, a dev chain), as they declare it.
        for side in side_processes(chosen):
            if env.get(side.setting):
                continue  # the user points the service at a real endpoint
            port = _free_port()
            log = logs / f"{side.name}.log"
            proc = _spawn(side.command(port, state), log)
            stack.processes.append(Proc(side.name, proc.pid, str(log), port))
            _wait_port(port, proc, log, side.start_timeout_s)
            env[side.setting] = side.url(port)
        if allow_random_weights:
            env.setdefault("GANFOLK_ALLOW_RANDOM_WEIGHTS", "1")

        started: list[tuple[Proc, subprocess.Popen[bytes]]] = []
        ports: dict[str, int] = {}
        for name in chosen:
            port = ports[name] = _pick_port(catalog.entry(name).port)
            log = logs / f"{name}.log"
            svc_env = {**env, "GANFOLK_SERVICE": name, "GANFOLK_GRPC_PORT": str(port)}
            if name in passwords:  # a service that uses NATS: its own user
                svc_env.update(GANFOLK_NATS_USER=name, GANFOLK_NATS_PASSWORD=passwords[name])
            svc_env.update(_peer_settings(name, ports, env, state))
            proc = _spawn([sys.executable, "-m", "ganfolk.cli", "serve", name], log, svc_env)
            http = svc_env.get("GANFOLK_GALLERY_HTTP_PORT") if name == "gallery" else None
            entry = Proc(name, proc.pid, str(log), port, f"http://127.0.0.1:{http}/" if http else "")
            stack.processes.append(entry)
            started.append((entry, proc))
        _save(manifest, stack)
        deadline = time.monotonic() + timeout
        for entry, proc in started:
            while (status := _health(entry.port)) != "SERVING":
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{entry.name} exited with {proc.returncode}; see {entry.log}:\n{_tail(Path(entry.log))}"  # noqa: E501
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{entry.name} not SERVING after {timeout}s ({status}); see {entry.log}"
                    )
                time.sleep(0.2)
    except BaseException:
        _stop(stack)
        manifest.unlink(missing_ok=True)
        raise
    return stack


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (it holds passwords), replacing ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
        out.write(text)


async def _own_topology(url: str, password: str) -> None:
    """As the coordinator: the streams and buckets the services and training runs only use."""
    # Only this login: none of the caller's GANFOLK_NATS_* credentials.
    settings = Settings(
        nats_user=nats_auth.COORDINATOR, nats_password=SecretStr(password), nats_creds_file=None
    )
    nc = await nats.connect(
        url,
        name="ganfolk-up",
        allow_reconnect=False,
        connect_timeout=5,
        **jetstream.connect_options(settings),
    )
    try:
        js = nc.jetstream()
        await jetstream.ensure_streams(js, 1)
        await jetstream.ensure_kv(js, jetstream.JOBS_BUCKET)
        for bucket in (jetstream.CANCEL_BUCKET, jetstream.SERVICES_BUCKET):
            await jetstream.ensure_kv(js, bucket, history=1)
        await train_topology.ensure_train_topology(
            js, load_settings(train_topology.TrainTopologySettings, stream_replicas=1)
        )
    finally:
        await nc.close()


S = TypeVar("S", bound=Settings)


def _address(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url.split(",")[0].strip())
    host = parsed.hostname or "127.0.0.1"
    return ("127.0.0.1" if host == "localhost" else host), parsed.port or NATS_PORT


def nats_login(settings: S, user: str) -> S:
    """``settings`` with the local stack's login for ``user`` (``train``, ``viewer``).

    Only when they name no credentials of their own and their NATS is the one the stack in
    their state directory (``GANFOLK_STATE_DIR``) runs; otherwise unchanged.
    """
    if settings.nats_user or settings.nats_creds_file is not None:
        return settings
    try:
        logins = json.loads((Path(settings.state_dir).resolve() / NATS_LOGINS).read_text())
        password = logins["users"][user]
        if _address(logins["nats_url"]) != _address(settings.nats_url):
            return settings
    except (OSError, ValueError, KeyError, TypeError):
        return settings
    redact.register(password)
    return settings.model_copy(update={"nats_user": user, "nats_password": SecretStr(password)})


def _peer_settings(name: str, ports: dict[str, int], env: dict[str, str], state: Path) -> dict[str, str]:
    """Where a service finds the services it calls, as started here (ports may have moved)."""
    out: dict[str, str] = {}
    if name == "coordinator" and "text" in ports:
        out["GANFOLK_COORDINATOR_TEXT_TARGET"] = f"127.0.0.1:{ports['text']}"
    if name == "gallery":
        coordinator = ports.get("coordinator", catalog.entry("coordinator").port)
        out["GANFOLK_GALLERY_COORDINATOR"] = env.get(
            "GANFOLK_GALLERY_COORDINATOR", f"127.0.0.1:{coordinator}"
        )
        http = int(env.get("GANFOLK_GALLERY_HTTP_PORT") or _pick_port(catalog.entry("gallery").http_port))
        out["GANFOLK_GALLERY_HTTP_PORT"] = str(http)
        if not env.get("GANFOLK_GALLERY_AUTH_TOKEN"):
            # A sign-in token of this stack's own, kept beside its state (owner-only).
            path = state / GALLERY_TOKEN
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch(mode=0o600)
                path.write_text(secrets.token_urlsafe(24))
            out["GANFOLK_GALLERY_AUTH_TOKEN"] = path.read_text().strip()
    return out


def _save(path: Path, stack: Stack) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(stack), indent=2))


def _load(path: Path) -> Stack:
    data = json.loads(path.read_text())
    return Stack(
        data["state_dir"], data["nats_url"], data["store_url"], [Proc(**p) for p in data.get("processes", [])]
    )


def _stop(stack: Stack, timeout: float = 30.0) -> list[str]:
    """Stop the stack's processes with SIGTERM; SIGKILL those still running after ``timeout``.

    Services first, all at once (each drains NATS and finishes or hands back its in-flight
    work), then the store, side processes and the broker, all at once: one after another,
    the waits would add up. Returns a line per process, in the manifest's reverse order.
    """
    services = [p for p in stack.processes if p.name in catalog.SERVICES]
    infrastructure = [p for p in stack.processes if p.name not in catalog.SERVICES]
    outcome: dict[int, str] = {}
    for group in (services, infrastructure):
        outcome.update(_terminate_all(group, timeout))
    return [f"{p.name}: {outcome[p.pid]}" for p in reversed(stack.processes) if p.pid in outcome]


def _terminate_all(procs: list[Proc], timeout: float) -> dict[int, str]:
    """SIGTERM every live process of ``procs``, wait for them together, SIGKILL stragglers."""
    started = time.monotonic()
    waiting: dict[int, Proc] = {}
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
            waiting[proc.pid] = proc
    exited = _wait_exit(list(waiting), timeout)
    outcome = {pid: f"stopped in {at - started:.1f}s" for pid, at in exited.items()}
    stragglers = [pid for pid in waiting if pid not in outcome]
    for pid in stragglers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        outcome[pid] = f"killed after {timeout:.0f}s (still running after SIGTERM)"
    _wait_exit(stragglers, KILL_WAIT_S)  # gone (and reaped, if ours) before the report says so
    return outcome


def _wait_exit(pids: list[int], timeout: float) -> dict[int, float]:
    """Wait until the processes exit or ``timeout`` passes; pid -> when (monotonic) it exited.

    A pidfd turns readable when its process exits, whoever its parent is (``ganfolk down``
    is not the stack's parent), so the wait needs no polling.
    """
    exited: dict[int, float] = {}
    fds: dict[int, int] = {}
    try:
        for pid in pids:
            try:
                fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                exited[pid] = time.monotonic()
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        pending = set(fds)
        while pending and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                pending.discard(fd)
                _reap(fds[fd])
                exited[fds[fd]] = time.monotonic()
    finally:
        for fd in fds:
            os.close(fd)
    return exited


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our child (``up`` failing), else nothing."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def down(state_dir: str | None = None) -> str:
    manifest = state_path(state_dir) / "stack.json"
    if not manifest.exists():
        return "no stack is running"
    report = _stop(_load(manifest))
    manifest.unlink()
    return "\n".join(report) or "nothing was running"


def status(state_dir: str | None = None) -> tuple[str, bool]:
    manifest = state_path(state_dir) / "stack.json"
    if not manifest.exists():
        return "no stack is running", False
    stack = _load(manifest)
    lines, healthy = [stack.describe(), ""], True
    for p in stack.processes:
        alive = _alive(p.pid)
        health = _health(p.port) if alive and p.name in catalog.SERVICES else ("running" if alive else "dead")
        healthy &= alive and health in ("SERVING", "running")
        lines.append(f"{p.name:<12} {health}")
    return "\n".join(lines), healthy
