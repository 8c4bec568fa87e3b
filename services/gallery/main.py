"""Entry point of the gallery: ``ganfolk serve gallery``.

One process serves two ports: the standard gRPC server of every GANfolk service (health,
reflection, ``GetInfo``) on the catalog's port, and the web app on
``GANFOLK_GALLERY_HTTP_PORT``, run by uvicorn on the same event loop. Health reports
NOT_SERVING until the web app listens, so probes and ``ganfolk up`` wait for the pages,
not just for gRPC. The gallery connects to no NATS server and no object store: everything
goes through the coordinator's jobs API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import uvicorn

from ganfolk.runtime.service import CoreHolder, ServiceDefinition
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import common_pb2
from services.gallery.config import GallerySettings
from services.gallery.jobs import Jobs
from services.gallery.servicer import Gallery, build_app

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # run_service owns SIGTERM/SIGINT and stops the web app through the stop hook.
        yield


@dataclass
class GalleryCore:
    """The web app once it listens: its address, for ``ganfolk up`` and the tests."""

    settings: GallerySettings
    device: str = "cpu"
    models: list[common_pb2.ModelRef] = field(default_factory=list)
    http_port: int = 0
    server: _Server | None = None
    task: asyncio.Task[None] | None = None
    jobs: Jobs | None = None

    @property
    def url(self) -> str:
        host = self.settings.gallery_http_host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{self.http_port}/"


def coordinator_target(settings: GallerySettings) -> str:
    from ganfolk.runtime.catalog import entry

    return settings.gallery_coordinator or f"127.0.0.1:{entry('coordinator').port}"


def load(settings: GallerySettings) -> GalleryCore:
    # Fail at start-up, naming the variable, rather than at the first sign-in.
    settings.require("gallery_auth_token", "reviewers sign in with it")
    return GalleryCore(settings)


async def serve(core: GalleryCore, settings: GallerySettings) -> None:
    """Start the web app on its port; returns once it accepts connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.gallery_http_host, settings.gallery_http_port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"the gallery cannot listen on {settings.gallery_http_host}:{settings.gallery_http_port} "
            f"({exc}); set GANFOLK_GALLERY_HTTP_PORT"
        ) from None
    core.http_port = int(sock.getsockname()[1])
    core.jobs = Jobs(
        coordinator_target(settings), settings.gallery_rpc_timeout_s, settings.gallery_coordinator_ca_file
    )
    secret = settings.gallery_session_secret.get_secret_value() if settings.gallery_session_secret else ""
    app = build_app(Gallery(settings, core.jobs), secret or secrets.token_urlsafe(32))
    config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False, proxy_headers=False)
    core.server = _Server(config)
    core.task = asyncio.create_task(core.server.serve(sockets=[sock]))
    while not core.server.started:
        if core.task.done():
            core.task.result()
            raise RuntimeError("the gallery's web server stopped while starting")
        await asyncio.sleep(0.02)
    log.info("gallery listening", extra={"url": core.url, "coordinator": core.jobs.target})


async def stop(core: GalleryCore) -> None:
    """Stop the web app (open event streams are closed), then the coordinator channel."""
    if core.server is not None and core.task is not None:
        core.server.should_exit = True
        core.server.force_exit = True  # event streams last as long as a job: do not wait for them
        with contextlib.suppress(Exception):
            await asyncio.wait_for(core.task, 15)
    if core.jobs is not None:
        await core.jobs.close()


def add_servicers(
    server: grpc.aio.Server, holder: CoreHolder[GalleryCore], store: ObjectStore, settings: GallerySettings
) -> None:
    """No gRPC service of its own: health, reflection and GetInfo come with every server."""


SERVICE: ServiceDefinition[GalleryCore] = ServiceDefinition(
    name="gallery",
    settings_cls=GallerySettings,
    grpc_services=[],
    load=load,
    add_servicers=add_servicers,
    serve=serve,
    stop=stop,
)
