"""gRPC bootstrap: health transitions, reflection, error mapping, size limits, metrics."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ganfolk.runtime.settings import ConfigError, Settings, load_settings
from ganfolk.runtime.storage import open_store
from ganfolk.v1 import text_pb2, text_pb2_grpc
from tests.fixtures.nats import free_port
from tests.fixtures.services import serving, wait_serving
from tests.runtime import sample_service

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health(channel: grpc.aio.Channel, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return int(reply.status)


async def test_health_not_serving_until_model_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("SAMPLE_LOAD_SECONDS", "1.5")
    async with serving(sample_service.SERVICE, wait=False, worker_enabled=False, store_url=str(tmp_path)) as (
        running,
        channel,
    ):
        assert await health(channel) == NOT_SERVING
        assert await health(channel, "ganfolk.v1.TextService") == NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await text_pb2_grpc.TextServiceStub(channel).Prompts(text_pb2.PromptsRequest(count=1))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "still loading" in (err.value.details() or "")
        await wait_serving(channel)
        assert await health(channel, "ganfolk.v1.TextService") == SERVING
        await running.grpc.health.enter_graceful_shutdown()
        assert await health(channel) == NOT_SERVING


async def test_reflection_lists_services(tmp_path) -> None:
    async with serving(sample_service.SERVICE, worker_enabled=False, store_url=str(tmp_path)) as (_, channel):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def requests():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for reply in stub.ServerReflectionInfo(requests()):
            names = {s.name for s in reply.list_services_response.service}
            break
        assert {"ganfolk.v1.TextService", "grpc.health.v1.Health"} <= names


async def test_value_error_becomes_invalid_argument_with_message(tmp_path) -> None:
    async with serving(sample_service.SERVICE, worker_enabled=False, store_url=str(tmp_path)) as (_, channel):
        stub = text_pb2_grpc.TextServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Prompts(text_pb2.PromptsRequest(count=0))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "count must be at least 1"
        reply = await stub.Prompts(text_pb2.PromptsRequest(count=2))
        assert len(reply.prompts) == 2


async def test_message_size_limit(tmp_path) -> None:
    async with serving(
        sample_service.SERVICE, worker_enabled=False, store_url=str(tmp_path), grpc_max_message_mb=1
    ) as (_, channel):
        big = text_pb2.PromptsRequest(count=1, meta={"job_id": "x" * (2 << 20)})
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await text_pb2_grpc.TextServiceStub(channel).Prompts(big)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_metrics_endpoint_counts_rpcs(tmp_path) -> None:
    port = free_port()
    async with serving(
        sample_service.SERVICE, worker_enabled=False, store_url=str(tmp_path), metrics_port=port
    ) as (_, channel):
        stub = text_pb2_grpc.TextServiceStub(channel)
        await stub.Prompts(text_pb2.PromptsRequest(count=1))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Prompts(text_pb2.PromptsRequest(count=0))
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
        )
        text = body.decode()
        assert 'ganfolk_rpc_requests_total{code="OK",method="Prompts",service="sample"}' in text
        assert 'code="INVALID_ARGUMENT",method="Prompts"' in text
        assert "ganfolk_rpc_latency_seconds_bucket" in text


async def test_tls(tmp_path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "tls.crt").write_bytes(cert_pem)
    (tmp_path / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    async with serving(
        sample_service.SERVICE,
        wait=False,
        worker_enabled=False,
        store_url=str(tmp_path / "objects"),
        tls_cert_file=tmp_path / "tls.crt",
        tls_key_file=tmp_path / "tls.key",
    ) as (running, _):
        creds = grpc.ssl_channel_credentials(root_certificates=cert_pem)
        options = [("grpc.ssl_target_name_override", "localhost")]
        async with grpc.aio.secure_channel(f"127.0.0.1:{running.port}", creds, options) as channel:
            await wait_serving(channel)
            reply = await text_pb2_grpc.TextServiceStub(channel).Prompts(text_pb2.PromptsRequest(count=1))
            assert len(reply.prompts) == 1


def test_missing_required_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANFOLK_STORE_URL", "s3://portraits?endpoint=127.0.0.1:9000")
    monkeypatch.delenv("GANFOLK_S3_ACCESS_KEY", raising=False)
    with pytest.raises(ConfigError, match="GANFOLK_S3_ACCESS_KEY is required"):
        open_store(load_settings(Settings).store_url)


def test_invalid_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANFOLK_GRPC_PORT", "fifty")
    with pytest.raises(ConfigError, match="GANFOLK_GRPC_PORT"):
        load_settings(Settings)
