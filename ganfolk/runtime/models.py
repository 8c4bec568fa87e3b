"""Model weights and devices, shared by the GPU services.

Weights load once at start-up from a path or an object-store URI, with a checksum.
Without weights a service refuses to start unless random weights are explicitly allowed
(demo/test mode), and then every output says so in its provenance.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.redact import redact_url
from ganfolk.runtime.settings import ConfigError, Settings
from ganfolk.runtime.storage import open_store
from ganfolk.v1 import common_pb2

log = logging.getLogger(__name__)


def resolve_device(setting: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else is taken as is."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"GANFOLK_DEVICE={setting} but no CUDA device is visible")
    return setting


def fetch_weights(source: str, settings: Settings, sha256: str | None = None, variable: str = "") -> Path:
    """Local path of a checkpoint given as a path, ``file://`` or ``s3://`` URI.

    Object-store weights are downloaded once into ``<state_dir>/weights`` and verified;
    a local file is verified against ``sha256`` when one is given.  The store opened for
    the download is closed before returning (its connection pool is not the service's).
    """
    name = f" ({variable})" if variable else ""
    if source.startswith("s3://"):
        # Weights live in the service's own store (its endpoint and credentials).
        with open_store(settings.store_url) as store:
            key = store.key_from_uri(source)
            path = settings.state_dir / "weights" / key
            if not path.exists() or (sha256 and file_sha256(path) != sha256.lower()):
                path.parent.mkdir(parents=True, exist_ok=True)
                store.get_file(key, path, sha256)
    else:
        path = Path(source.removeprefix("file://"))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}{name}")
    if sha256:
        actual = file_sha256(path)
        if actual != sha256.lower():
            raise ValueError(f"checkpoint {path}{name} has sha256 {actual}, expected {sha256}")
    return path


def model_ref(
    name: str, source: str = "", sha256: str = "", random_weights: bool = False
) -> common_pb2.ModelRef:
    # Provenance is job data (KV, manifests, token metadata): a source URL keeps no credentials.
    return common_pb2.ModelRef(
        name=name, source=redact_url(source), sha256=sha256, random_weights=random_weights
    )


def provenance(
    service: str,
    models: list[common_pb2.ModelRef],
    parameters: dict[str, Any],
    started: float,
    seeds: list[int] | None = None,
    fallbacks: list[str] | None = None,
    device: str = "cpu",
) -> common_pb2.Provenance:
    """Provenance of one output; ``started`` is a ``time.perf_counter()`` reading."""
    from ganfolk import __version__

    params = struct_pb2.Struct()
    params.update({k: v for k, v in parameters.items() if v is not None})
    prov = common_pb2.Provenance(
        service=service,
        service_version=__version__,
        models=models,
        seeds=seeds or [],
        parameters=params,
        fallbacks=fallbacks or [],
        device=device,
        duration_seconds=time.perf_counter() - started,
    )
    prov.created_at.GetCurrentTime()
    return prov


def require_weights_or_random(settings: Settings, field: str, what: str) -> str | None:
    """The configured checkpoint, or None when random weights are explicitly allowed."""
    value = getattr(settings, field)
    if value:
        return str(value)
    if settings.allow_random_weights:
        log.warning("no %s configured: using RANDOM weights (demo/test mode); outputs are marked", what)
        return None
    raise ConfigError(
        f"GANFOLK_{field.upper()} is required: no {what} is configured (set GANFOLK_ALLOW_RANDOM_WEIGHTS=1 "
        "to run with random weights in demo/test mode)"
    )
