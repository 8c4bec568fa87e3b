"""Entry point of the StyleGAN2 sampling service: ``ganfolk serve stylegan``."""

from __future__ import annotations

import grpc

from ganfolk.runtime.service import CoreHolder, ServiceDefinition
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import stylegan_pb2, stylegan_pb2_grpc
from services.stylegan import worker
from services.stylegan.backends import load_sampler
from services.stylegan.config import StyleGANSettings
from services.stylegan.core import Sampler
from services.stylegan.servicer import StyleGANServicer


def add_servicers(
    server: grpc.aio.Server, holder: CoreHolder[Sampler], store: ObjectStore, settings: StyleGANSettings
) -> None:
    stylegan_pb2_grpc.add_StyleGANServiceServicer_to_server(StyleGANServicer(holder, store, settings), server)


SERVICE: ServiceDefinition[Sampler] = ServiceDefinition(
    name="stylegan",
    settings_cls=StyleGANSettings,
    grpc_services=[stylegan_pb2.DESCRIPTOR.services_by_name["StyleGANService"].full_name],
    load=load_sampler,
    add_servicers=add_servicers,
    stages=worker.stages,
)
