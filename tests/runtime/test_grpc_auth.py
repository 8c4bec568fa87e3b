"""Bearer tokens on gRPC: required beyond loopback, checked on every RPC but health/reflection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr

from ganfolk.runtime.grpc_server import GrpcServer, is_loopback, required_token, start_grpc_server
from ganfolk.runtime.service import CoreHolder
from ganfolk.runtime.settings import ConfigError, Settings
from ganfolk.v1 import text_pb2, text_pb2_grpc
from tests.runtime import sample_service

TOKEN = "s3cret-token-for-tests"


@contextlib.asynccontextmanager
async def server(**settings: object) -> AsyncIterator[tuple[GrpcServer, grpc.aio.Channel]]:
    """The test service's servicer on a server started with ``settings``; a loopback channel to it."""
    holder: CoreHolder[sample_service.Core] = CoreHolder()
    holder.set(sample_service.Core())
    config = Settings(service="sample", grpc_port=0, **settings)  # type: ignore[arg-type]

    def register(srv: grpc.aio.Server) -> None:
        text_pb2_grpc.add_TextServiceServicer_to_server(sample_service.Servicer(holder), srv)

    started = await start_grpc_server(config, register, ["ganfolk.v1.TextService"])
    await started.set_serving(True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{started.port}")
    try:
        yield started, channel
    finally:
        await channel.close()
        await started.stop(0)


async def prompts(channel: grpc.aio.Channel, token: str | None) -> text_pb2.PromptsResponse:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    stub = text_pb2_grpc.TextServiceStub(channel)
    reply: text_pb2.PromptsResponse = await stub.Prompts(text_pb2.PromptsRequest(count=1), metadata=metadata)
    return reply


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "ganfolk-text"])
def test_network_address_without_token_or_mtls_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="GANFOLK_GRPC_AUTH_TOKEN") as err:
        required_token(Settings(grpc_host=host))
    assert "GANFOLK_TLS_CLIENT_CA_FILE" in str(err.value)


def test_loopback_stays_open_and_mtls_counts_as_authentication(tmp_path: Path) -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost"))
    assert required_token(Settings(grpc_host="127.0.0.1")) == ""
    assert required_token(Settings(grpc_host="0.0.0.0", tls_client_ca_file=tmp_path / "ca.pem")) == ""
    assert required_token(Settings(grpc_host="0.0.0.0", grpc_auth_token=SecretStr(TOKEN))) == TOKEN


async def test_server_binding_all_interfaces_without_token_does_not_start() -> None:
    with pytest.raises(ConfigError, match="GANFOLK_GRPC_AUTH_TOKEN"):
        async with server(grpc_host="0.0.0.0"):
            pass


async def test_calls_need_the_token_while_health_and_reflection_stay_open() -> None:
    async with server(grpc_host="0.0.0.0", grpc_auth_token=SecretStr(TOKEN)) as (_, channel):
        for sent in (None, "wrong-token", ""):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await prompts(channel, sent)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer" in (err.value.details() or "")
            assert "wrong-token" not in (err.value.details() or "")
        assert len((await prompts(channel, TOKEN)).prompts) == 1

        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="ganfolk.v1.TextService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        async def listing() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for answer in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(listing()):
            assert "ganfolk.v1.TextService" in {s.name for s in answer.list_services_response.service}
            break


async def test_loopback_server_with_a_token_checks_it_too() -> None:
    async with server(grpc_host="127.0.0.1", grpc_auth_token=SecretStr(TOKEN)) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await prompts(channel, None)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await prompts(channel, TOKEN)).prompts
