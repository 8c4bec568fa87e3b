"""Secrets out of logs, settings errors and provenance (ganfolk.runtime.redact)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from ganfolk.runtime import redact
from ganfolk.runtime.errors import describe
from ganfolk.runtime.logs import JsonFormatter
from ganfolk.runtime.models import model_ref
from ganfolk.runtime.settings import ConfigError, load_settings
from ganfolk.runtime.storage import open_store
from services.text.config import TextSettings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:sk-secret1@127.0.0.1:8088/v1", "http://***@127.0.0.1:8088/v1"),
        ("s3://AKID:s3cr3t%2Fx@bucket?endpoint=minio:9000", "s3://***@bucket?endpoint=minio:9000"),
        ("https://llm.example/v1?api_key=abc123&api-version=2024", "https://llm.example/v1?api_key=***&api-version=2024"),
        (
            "get https://b.s3/k?X-Amz-Credential=AKID%2F1&X-Amz-Signature=f00d&x=1 failed",
            "get https://b.s3/k?X-Amz-Credential=***&X-Amz-Signature=***&x=1 failed",
        ),
        ("nats://svc:pw-123456@nats:4222 and nats://nats:4222", "nats://***@nats:4222 and nats://nats:4222"),
        ("/var/lib/ganfolk/objects", "/var/lib/ganfolk/objects"),
    ],
)  # fmt: skip
def test_redact_url(url: str, shown: str) -> None:
    assert redact.redact_url(url) == shown


def test_registered_secrets_are_masked_in_every_log_line() -> None:
    settings = load_settings(
        TextSettings,
        text_llm_base_url="http://user:sk-url-4f9c1e@127.0.0.1:1/v1",
        text_llm_api_key="sk-key-77d0a2",
    )
    assert settings.text_llm_api_key is not None
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.redact")
    log.addHandler(handler)
    try:
        # Whoever logs a secret, in the message, an extra field, a nested value or a traceback.
        log.warning(
            "key sk-key-77d0a2 in the message", extra={"url": "sk-url-4f9c1e", "nested": ["sk-key-77d0a2"]}
        )
        try:
            raise RuntimeError("refused key sk-key-77d0a2 for http://x:sk-url-4f9c1e@h/v1")
        except RuntimeError:
            log.exception("call failed")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    assert "sk-key-77d0a2" not in stream.getvalue() and "sk-url-4f9c1e" not in stream.getvalue()
    assert "key *** in the message" in lines[0]


def test_settings_error_does_not_echo_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANFOLK_TEXT_LLM_TIMEOUT_SECONDS", "http://u:sk-timeout-93a1@h/")
    with pytest.raises(ConfigError) as err:
        load_settings(TextSettings, text_max_attempts="sk-attempts-55aa")
    message = str(err.value)
    assert "GANFOLK_TEXT_LLM_TIMEOUT_SECONDS" in message and "GANFOLK_TEXT_MAX_ATTEMPTS" in message
    assert "sk-timeout-93a1" not in message and "http://***@h/" in message
    # A value that is not a URL is shown (it is what to fix), redacted if it is a known secret.
    assert "sk-attempts-55aa" in message
    assert redact.shown("sk-attempts-55aa", name="text_llm_api_key") == "***"
    assert redact.shown("/etc/tls/key.pem", name="tls_key_file") == "'/etc/tls/key.pem'"


def test_store_url_errors_and_provenance_keep_no_credentials() -> None:
    with pytest.raises(ValueError) as err:
        open_store("file://admin:store-pw-1f2e@host/objects")
    assert "store-pw-1f2e" not in str(err.value) and "file://***@host/objects" in str(err.value)
    ref = model_ref("smollm2", "http://user:sk-prov-00aa11@127.0.0.1:8088/v1?token=t0ken-x")
    assert ref.source == "http://***@127.0.0.1:8088/v1?token=***"


def test_short_values_are_not_registered() -> None:
    redact.register("abc")
    assert redact.redact("abc def") == "abc def"


def test_failure_text_for_callers_and_job_records_is_masked() -> None:
    redact.register("sk-failure-8d8d8d")
    exc = RuntimeError("upstream said: bad key sk-failure-8d8d8d for https://u:p4ss@h/v1")
    assert describe(exc) == "upstream said: bad key *** for https://***@h/v1"
