"""Entry point of the coordinator: ``ganfolk serve coordinator``."""

from __future__ import annotations

import grpc

from ganfolk.runtime.service import CoreHolder, ServiceDefinition
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc
from services.coordinator import core
from services.coordinator.config import CoordinatorSettings
from services.coordinator.servicer import JobServicer


def add_servicers(
    server: grpc.aio.Server,
    holder: CoreHolder[core.Coordinator],
    store: ObjectStore,
    settings: CoordinatorSettings,
) -> None:
    jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(holder, settings), server)


SERVICE: ServiceDefinition[core.Coordinator] = ServiceDefinition(
    name="coordinator",
    settings_cls=CoordinatorSettings,
    grpc_services=[jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name],
    load=core.load,
    add_servicers=add_servicers,
    start=core.start,
    stop=core.stop,
)
