"""Runs one service: gRPC server + model loading + stage workers, with a clean stop.

Every ``services/<name>/main.py`` exposes a :class:`ServiceDefinition`; ``ganfolk serve``
hands it to :func:`run_service`. Start-up order matters for health: the gRPC port opens
NOT_SERVING, the model loads in a thread, then health flips to SERVING and the stage
workers start fetching. SIGTERM/SIGINT reverse it: NOT_SERVING, workers finish or hand
back their tasks, ``nc.drain()``, ``server.stop(grace)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from nats.aio.client import Client as NATS

from ganfolk.runtime import catalog, jetstream, metrics
from ganfolk.runtime.errors import Transient
from ganfolk.runtime.grpc_server import GrpcServer, start_grpc_server
from ganfolk.runtime.logs import configure_logging
from ganfolk.runtime.settings import ConfigError, Settings, load_settings
from ganfolk.runtime.storage import ObjectStore, open_store
from ganfolk.runtime.worker import StageHandler, StageWorker
from ganfolk.v1 import common_pb2, info_pb2, info_pb2_grpc

log = logging.getLogger(__name__)

C = TypeVar("C")
INFO_SERVICE = info_pb2.DESCRIPTOR.services_by_name["InfoService"].full_name

# service name -> module exposing SERVICE, from the one service table.
SERVICE_MODULES: dict[str, str] = {name: e.module for name, e in catalog.SERVICES.items()}
# Longest wait for the NATS connection to drain on shutdown (in-flight work has settled by then).
DRAIN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SideProcess:
    """A local process a service needs when the stack runs on one machine (``ganfolk up``).

    E.g. the dev chain the mint service signs on, or the local LLM the text service asks.
    In a cluster these are real endpoints set through ``setting``; locally the launcher
    starts the process on a free port and sets ``setting`` for the service, unless the
    user already set it.
    """

    name: str
    # Environment variable the process provides (e.g. GANFOLK_MINT_RPC_URL).
    setting: str
    # argv, given a free port and the stack's state directory.
    command: Callable[[int, Path], list[str]]
    # The setting's value, given the port.
    url: Callable[[int], str]
    start_timeout_s: float = 30.0


class CoreHolder(Generic[C]):
    """The loaded core of a service; servicers read it, it is set once loading finishes."""

    def __init__(self) -> None:
        self._core: C | None = None

    def set(self, core: C) -> None:
        self._core = core

    @property
    def ready(self) -> bool:
        return self._core is not None

    def get(self) -> C:
        if self._core is None:
            raise Transient("the model is still loading; retry when health reports SERVING")
        return self._core


def describe_core(core: Any) -> tuple[list[common_pb2.ModelRef], str, list[str]]:
    """Models, device and fallbacks of a loaded core.

    Convention: a core exposes ``models`` (list of ModelRef) or ``model`` (one), ``device``,
    and optionally ``fallbacks`` (names of classical algorithms used instead of models).
    """
    models = list(getattr(core, "models", None) or ([core.model] if getattr(core, "model", None) else []))
    return models, str(getattr(core, "device", "")), list(getattr(core, "fallbacks", []) or [])


class InfoServicer(info_pb2_grpc.InfoServiceServicer):
    def __init__(self, name: str, holder: CoreHolder[Any], stages: list[str]) -> None:
        self.name, self.holder, self.stages = name, holder, stages

    async def GetInfo(self, request: info_pb2.GetInfoRequest, context: Any) -> info_pb2.GetInfoResponse:
        """What this process serves, and whether its weights are real."""
        from ganfolk import __version__

        reply = info_pb2.GetInfoResponse(service=self.name, version=__version__, ready=self.holder.ready)
        if self.holder.ready:
            models, device, fallbacks = describe_core(self.holder.get())
            reply.models.extend(models)
            reply.random_weights = any(m.random_weights for m in models)
            reply.device = device
            reply.fallbacks.extend(fallbacks)
            reply.stages.extend(self.stages)
            # The mint service's chain: the coordinator asks for review before minting on a real one.
            reply.chain_id = int(getattr(self.holder.get(), "chain_id", 0) or 0)
        return reply


@dataclass
class ServiceDefinition(Generic[C]):
    """How to run a service: its settings, model loader, servicers and stages."""

    name: str
    settings_cls: type[Settings]
    # Full names of the gRPC services, for health and reflection.
    grpc_services: Sequence[str]
    # Blocking: loads the model(s). Runs in a thread so health answers meanwhile.
    load: Callable[[Any], C]
    # Adds the servicers; they read the core from the holder once it is loaded.
    add_servicers: Callable[[grpc.aio.Server, CoreHolder[C], ObjectStore, Any], None]
    # The NATS stages the service works on, built from the loaded core.
    stages: Callable[[C, ObjectStore, Any], list[StageHandler[Any]]] = field(
        default=lambda core, store, s: []
    )
    # Local processes `ganfolk up` starts for this service (its port comes from the catalog).
    side_processes: Sequence[SideProcess] = ()
    # Async start-up once loaded, with the NATS connection (e.g. the coordinator's engine).
    start: Callable[[C, NATS, ObjectStore, Any], Awaitable[None]] | None = None
    # Async clean-up before the NATS connection drains.
    stop: Callable[[C], Awaitable[None]] | None = None
    # Async start-up once loaded that needs no NATS (e.g. the gallery's HTTP server); health
    # turns SERVING only after it returns. ``stop`` undoes it.
    serve: Callable[[C, Any], Awaitable[None]] | None = None


def load_definition(name: str) -> ServiceDefinition[Any]:
    module_name = SERVICE_MODULES.get(name)
    if module_name is None:
        raise ConfigError(f"unknown service {name!r}; choose one of {', '.join(SERVICE_MODULES)}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"service {name!r} is not part of this build ({module_name} is missing)"
            ) from None
        raise
    definition: ServiceDefinition[Any] = module.SERVICE
    if definition.name != name:
        raise ConfigError(f"{module_name} defines service {definition.name!r}, the catalog says {name!r}")
    return definition


def check_stages(name: str, handlers: Sequence[StageHandler[Any]]) -> None:
    """Fail fast when a service's workers and the catalog disagree on its stages.

    The coordinator dispatches by the catalog: a stage served under another name would
    never receive a task, and one the catalog does not list would be driven by no one.
    """
    if name not in catalog.SERVICES:
        return  # an embedded service (tests, a user's own app) is not driven by the coordinator
    declared = set(catalog.entry(name).stages)
    served = {h.stage for h in handlers}
    if served - declared:
        raise ConfigError(
            f"service {name!r} serves stages {sorted(served - declared)} that the catalog does not list "
            f"(ganfolk/runtime/catalog.py lists {sorted(declared)})"
        )


def service_settings(definition: ServiceDefinition[Any], **overrides: Any) -> Settings:
    """The settings of a service: environment variables, then ``overrides`` (CLI flags)."""
    return load_settings(definition.settings_cls, service=definition.name, **overrides)


def policy_from_settings(policy: jetstream.StagePolicy, settings: Settings) -> jetstream.StagePolicy:
    """A stage's policy with the deployment's overrides (GANFOLK_TASK_*) applied."""
    changes: dict[str, Any] = {}
    if settings.task_ack_wait_s:
        changes["ack_wait"] = settings.task_ack_wait_s
        if policy.heartbeat and policy.heartbeat > settings.task_ack_wait_s / 3:
            # Heartbeats must come well within the new ack wait, or running tasks are redelivered.
            changes["heartbeat"] = None
    if settings.task_max_ack_pending:
        changes["max_ack_pending"] = settings.task_max_ack_pending
    return dataclasses.replace(policy, **changes) if changes else policy


@dataclass
class RunningService(Generic[C]):
    grpc: GrpcServer
    holder: CoreHolder[C]
    workers: list[StageWorker] = field(default_factory=list)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def port(self) -> int:
        return self.grpc.port


async def run_service(
    definition: ServiceDefinition[C],
    settings: Settings,
    on_started: Callable[[RunningService[C]], None] | None = None,
    install_signal_handlers: bool = True,
    setup_logging: bool = True,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``running.stop_event``), then stop gracefully."""
    if setup_logging:
        configure_logging(settings.service, settings.log_level)
    if settings.metrics_port is not None:
        port = metrics.start_metrics_server(settings.metrics_port)
        log.info("metrics listening", extra={"port": port})
    holder: CoreHolder[C] = CoreHolder()
    # The one storage client of the process, shared by the gRPC and NATS adapters.
    store = open_store(settings.store_url)
    stage_names: list[str] = []

    def register(server: grpc.aio.Server) -> None:
        definition.add_servicers(server, holder, store, settings)
        info_pb2_grpc.add_InfoServiceServicer_to_server(
            InfoServicer(settings.service, holder, stage_names), server
        )

    server = await start_grpc_server(settings, register, [*definition.grpc_services, INFO_SERVICE])
    running = RunningService(server, holder)
    if install_signal_handlers:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, running.stop_event.set)
    if on_started:
        on_started(running)
    nc = None
    worker_tasks: list[asyncio.Task[None]] = []
    try:
        loading = asyncio.create_task(asyncio.to_thread(definition.load, settings))
        stopped = asyncio.create_task(running.stop_event.wait())
        await asyncio.wait({loading, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():  # asked to stop while loading: the thread finishes on its own
            log.info("stopping before the model finished loading")
            return
        stopped.cancel()
        core = loading.result()
        models, _, _ = describe_core(core)
        if any(m.random_weights for m in models):
            log.warning("RUNNING WITH RANDOM WEIGHTS: outputs are meaningless (demo/test mode)")
        handlers = definition.stages(core, store, settings) if settings.worker_enabled else []
        check_stages(definition.name, handlers)
        for handler in handlers:
            handler.policy = policy_from_settings(handler.policy, settings)
        stage_names.extend(h.stage for h in handlers)
        if handlers or definition.start:
            nc = await jetstream.connect(settings.nats_url, name=settings.service, settings=settings)
            await jetstream.ensure_streams(nc.jetstream(), settings.stream_replicas)
        if definition.start and nc is not None:
            await definition.start(core, nc, store, settings)
        if definition.serve:
            await definition.serve(core, settings)
        holder.set(core)
        metrics.MODEL_READY.labels(settings.service).set(1)
        if nc is not None:
            # Tells the coordinator what this service runs (e.g. random weights -> skip the stage).
            info = await InfoServicer(settings.service, holder, stage_names).GetInfo(
                info_pb2.GetInfoRequest(), None
            )
            await jetstream.publish_service_info(nc.jetstream(), settings.service, info.SerializeToString())
        if handlers and nc is not None:
            for handler in handlers:
                worker = StageWorker(nc, handler)
                await worker.setup()
                running.workers.append(worker)
                worker_tasks.append(asyncio.create_task(worker.run()))
        await server.set_serving(True)
        log.info("serving", extra={"port": server.port, "stages": [h.stage for h in handlers]})
        await running.stop_event.wait()
    finally:
        log.info("shutting down", extra={"grace_s": settings.grpc_grace_seconds})
        await server.health.enter_graceful_shutdown()
        await asyncio.gather(*(w.stop(settings.grpc_grace_seconds) for w in running.workers))
        for task in worker_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=settings.grpc_grace_seconds + 5)
        if definition.stop and holder.ready:
            with contextlib.suppress(Exception):
                await definition.stop(holder.get())
        if nc is not None:
            # nats-py waits 30 s by default for subscriptions to drain, as long as the
            # launcher waits before SIGKILL: a subscription someone forgot to close must
            # cost a bounded wait, not the clean exit.
            nc.options["drain_timeout"] = DRAIN_TIMEOUT_S
            with contextlib.suppress(Exception):
                await nc.drain()
        await server.stop(settings.grpc_grace_seconds)
        metrics.MODEL_READY.labels(settings.service).set(0)
        store.close()
        log.info("stopped")
