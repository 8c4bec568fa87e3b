"""The one settings module: every value comes from a `GANFOLK_*` environment variable.

Services extend :class:`Settings` with their own fields (``services/<name>/config.py``);
``load_settings`` turns validation problems into a :class:`ConfigError` that names the
environment variable to fix, so a bad deployment stops at start-up, not mid-job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ganfolk.runtime import redact

ENV_PREFIX = "GANFOLK_"


class ConfigError(RuntimeError):
    """A required setting is missing or invalid; the message names the variable."""


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


class Settings(BaseSettings):
    """Settings shared by every process. Each field maps to ``GANFOLK_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    service: str = "ganfolk"
    log_level: str = "INFO"
    state_dir: Path = Path(".state")

    # gRPC
    grpc_host: str = "127.0.0.1"
    # Unset: the service's port in the catalog (ganfolk/runtime/catalog.py).
    grpc_port: int = 50051
    grpc_max_message_mb: int = 32
    grpc_grace_seconds: float = 10.0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Bearer token every RPC but health and reflection must carry ("authorization: Bearer
    # <token>"); required, unless mutual TLS is on, when grpc_host is not a loopback address.
    grpc_auth_token: SecretStr | None = None

    # Prometheus endpoint; disabled when unset.
    metrics_port: int | None = None

    # NATS JetStream
    nats_url: str = "nats://127.0.0.1:4222"
    # NATS credentials: a user and password (ganfolk.runtime.nats_auth generates the server's
    # users, one per service, with per-service permissions), or a .creds file (nkey/JWT).
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_creds_file: Path | None = None
    # Run the stage worker(s) of the service; off for gRPC-only deployments.
    worker_enabled: bool = True
    stream_replicas: int = 1
    # Overrides every stage's ack wait (seconds before an unacked task is redelivered).
    task_ack_wait_s: float | None = None
    # Overrides every stage's max_ack_pending: in-flight tasks of a stage across all replicas,
    # so raise it above replicas x concurrency when scaling a service out.
    task_max_ack_pending: int | None = None

    # Object store: a path or file:///path (embedded default), or s3://bucket?endpoint=host:port.
    # open_store reads S3 credentials and region itself (GANFOLK_S3_ACCESS_KEY, _SECRET_KEY,
    # _REGION, or the URL), so they are not settings here.
    store_url: str = ".state/objects"

    # Models
    device: str = "auto"
    allow_random_weights: bool = False
    # Largest image (width x height) any service decodes; guards against decompression bombs.
    max_image_pixels: int = 40_000_000
    # Largest inline image a gRPC caller may send.
    max_inline_image_mb: int = 16

    @model_validator(mode="before")
    @classmethod
    def _catalog_port(cls, data: Any) -> Any:
        # One place knows each service's port: the catalog. An explicit value still wins.
        if isinstance(data, dict) and data.get("grpc_port") in (None, ""):
            from ganfolk.runtime.catalog import SERVICES

            entry = SERVICES.get(str(data.get("service") or ""))
            if entry is not None:
                data = {**data, "grpc_port": entry.port}
        return data

    def grpc_token(self) -> str:
        """The bearer token this service's gRPC API requires ('' when none)."""
        return self.grpc_auth_token.get_secret_value() if self.grpc_auth_token else ""

    def require(self, field: str, why: str = "") -> Any:
        """Return a field's value or stop with a message naming its variable."""
        value = getattr(self, field)
        if value is None or value == "":
            reason = f" ({why})" if why else ""
            raise ConfigError(f"{env_name(field)} is required{reason}")
        return value.get_secret_value() if isinstance(value, SecretStr) else value


S = TypeVar("S", bound=Settings)


def load_settings(cls: type[S] = Settings, **overrides: Any) -> S:  # type: ignore[assignment]
    """Read settings from the environment (overrides win, e.g. from CLI flags)."""
    try:
        settings = cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            # The input may be a URL with credentials, or a key: shown redacted, if at all.
            got = redact.shown(err.get("input"), name=field)
            problems.append(f"{env_name(field)}: {err['msg']} (got {got})")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
    # Every secret the process is configured with is masked in its logs from here on.
    redact.register_settings(settings)
    return settings
