"""The coordinator's core object: holds the engine once NATS is connected. Runs no model."""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.aio.client import Client as NATS

from ganfolk.runtime.settings import load_settings
from ganfolk.runtime.storage import ObjectStore
from ganfolk.runtime.train_topology import TrainTopologySettings, ensure_train_topology
from ganfolk.v1 import common_pb2
from services.coordinator.config import CoordinatorSettings
from services.coordinator.engine import Engine


@dataclass
class Coordinator:
    settings: CoordinatorSettings
    engine: Engine | None = None
    device: str = "cpu"
    models: list[common_pb2.ModelRef] = field(default_factory=list)


def load(settings: CoordinatorSettings) -> Coordinator:
    return Coordinator(settings)


async def start(core: Coordinator, nc: NATS, store: ObjectStore, settings: CoordinatorSettings) -> None:
    # The training registry is the privileged side's too: runs may only publish into it.
    bounds = load_settings(TrainTopologySettings, stream_replicas=settings.stream_replicas)
    await ensure_train_topology(nc.jetstream(), bounds)
    core.engine = Engine(nc, settings, store)
    await core.engine.start()


async def stop(core: Coordinator) -> None:
    if core.engine is not None:
        await core.engine.stop()
