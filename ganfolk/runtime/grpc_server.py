"""gRPC server bootstrap on grpc.aio shared by every service.

Adds the library health service (NOT_SERVING until the model is loaded), reflection,
message-size limits, optional TLS, an interceptor for metrics and error mapping, a
bearer-token check (required before a service listens beyond loopback), and a graceful stop.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from ganfolk.runtime import metrics
from ganfolk.runtime.errors import classify, describe
from ganfolk.runtime.settings import ConfigError, Settings

log = logging.getLogger(__name__)
_PASSTHROUGH = ("/grpc.health.", "/grpc.reflection.")


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts and times every RPC and turns exceptions into status codes with their message."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(_PASSTHROUGH):
            return handler
        name = method.rsplit("/", 1)[-1]
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                start = time.perf_counter()
                code = "OK"
                try:
                    return await inner(request, context)
                except BaseException as exc:
                    code, details = self._classify(exc, context, name)
                    if details is not None:  # abort() raises AbortError in place of exc
                        # The traceback holds this frame, which holds exc and the request: a cycle
                        # that would pin a large request until the next full gc pass.
                        exc.__traceback__ = None
                        await context.abort(grpc.StatusCode[code], details)
                    raise
                finally:
                    self._observe(name, code, start)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                start = time.perf_counter()
                code = "OK"
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException as exc:
                    code, details = self._classify(exc, context, name)
                    if details is not None:  # abort() raises AbortError in place of exc
                        # The traceback holds this frame, which holds exc and the request: a cycle
                        # that would pin a large request until the next full gc pass.
                        exc.__traceback__ = None
                        await context.abort(grpc.StatusCode[code], details)
                    raise
                finally:
                    self._observe(name, code, start)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler

    def _classify(
        self, exc: BaseException, context: grpc.aio.ServicerContext, method: str
    ) -> tuple[str, str | None]:
        """Status code name of a failed RPC, and the details to abort with (None: already aborted)."""
        if isinstance(exc, grpc.aio.AbortError):
            code = context.code()
            return (code.name if code is not None else "UNKNOWN"), None
        if not isinstance(exc, Exception):  # cancellation, interpreter exit
            return "CANCELLED", None
        verdict = classify(exc)
        level = logging.ERROR if verdict.code == grpc.StatusCode.INTERNAL else logging.INFO
        log.log(level, "rpc %s failed: %s", method, describe(exc), exc_info=level == logging.ERROR)
        return verdict.code.name, describe(exc)

    def _observe(self, method: str, code: str, start: float) -> None:
        metrics.RPC_REQUESTS.labels(self.service, method, code).inc()
        metrics.RPC_LATENCY.labels(self.service, method).observe(time.perf_counter() - start)


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every RPC without ``authorization: Bearer <token>`` with UNAUTHENTICATED.

    Health and reflection stay open, so load balancers, Compose and Kubernetes probes
    need no token.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_PASSTHROUGH):
            return handler
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        sent = sent.encode() if isinstance(sent, str) else bytes(sent)
        if hmac.compare_digest(sent, self._expected):
            return handler
        return _refusing(handler)


_REFUSED = "send the service's token as gRPC metadata 'authorization: Bearer <token>'"


def _refusing(handler: Any) -> Any:
    """A handler of the same kind as ``handler`` that only answers UNAUTHENTICATED."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSED)

    # Streaming responses are consumed with ``async for`` (by the metrics interceptor, too), so
    # their refusal must be an async generator, not a coroutine.
    async def refuse_stream(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSED)
        yield  # pragma: no cover - abort() raises

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **codecs)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, **codecs)


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (``0.0.0.0`` and names are not)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def required_token(settings: Settings) -> str:
    """The token the server checks ('' for none); refuses an open server beyond loopback.

    A service bound to a network address must authenticate its callers: a bearer token,
    or mutual TLS (client certificates); on loopback it may stay open (``ganfolk up``).
    """
    token = settings.grpc_token()
    if token or settings.tls_client_ca_file or is_loopback(settings.grpc_host):
        return token
    raise ConfigError(
        f"GANFOLK_GRPC_HOST={settings.grpc_host} listens beyond this machine, so callers must "
        "authenticate: set GANFOLK_GRPC_AUTH_TOKEN (a bearer token they send), or "
        "GANFOLK_TLS_CLIENT_CA_FILE with GANFOLK_TLS_CERT_FILE and GANFOLK_TLS_KEY_FILE (mutual "
        "TLS); or bind GANFOLK_GRPC_HOST=127.0.0.1"
    )


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    port: int
    service_names: Sequence[str]

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in (*self.service_names, ""):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new RPCs, let in-flight ones finish within grace."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not settings.tls_cert_file:
        return None
    key = settings.require("tls_key_file", "TLS is enabled by GANFOLK_TLS_CERT_FILE")
    ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def channel_options(max_message_mb: int) -> list[tuple[str, int]]:
    limit = max_message_mb * 1024 * 1024
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]


async def start_grpc_server(
    settings: Settings, register: Callable[[grpc.aio.Server], None], service_names: Sequence[str]
) -> GrpcServer:
    """Start a server with health (NOT_SERVING), reflection and the given servicers.

    ``register`` adds the service's servicers; ``service_names`` are their full names
    (e.g. ``ganfolk.v1.UpscaleService``) for health and reflection. Port 0 picks a free port.
    Beyond loopback it refuses to start without a token or mutual TLS (:func:`required_token`).
    """
    token = required_token(settings)
    interceptors: list[grpc.aio.ServerInterceptor] = [ServiceInterceptor(settings.service)]
    if token:
        interceptors.append(TokenInterceptor(token))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=channel_options(settings.grpc_max_message_mb),
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    register(server)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    creds = _credentials(settings)
    port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    wrapper = GrpcServer(server, health, port, list(service_names))
    await wrapper.set_serving(False)
    await server.start()
    log.info("grpc listening", extra={"address": f"{settings.grpc_host}:{port}", "tls": creds is not None})
    return wrapper
