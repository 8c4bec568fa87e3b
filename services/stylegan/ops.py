"""The Sample operation on protobuf messages, shared by the gRPC servicer and the NATS stage.

Validation lives here so both adapters reject the same bad requests with the same words.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.images import inline_ref, store_image
from ganfolk.runtime.models import provenance
from ganfolk.runtime.storage import ObjectStore, validate_key
from ganfolk.v1 import stylegan_pb2
from services.stylegan.config import StyleGANSettings
from services.stylegan.core import SampleParams, Sampler

_MODES = {
    stylegan_pb2.LATENT_DISTRIBUTION_UNSPECIFIED: "truncated",
    stylegan_pb2.LATENT_DISTRIBUTION_TRUNCATED_NORMAL: "truncated",
    stylegan_pb2.LATENT_DISTRIBUTION_NORMAL: "normal",
}


def sample_params(request: stylegan_pb2.SampleRequest, settings: StyleGANSettings) -> SampleParams:
    """Check a SampleRequest and apply defaults; InvalidArgument says what to fix."""
    which = request.WhichOneof("seeds")
    if which == "seed_list":
        seeds = tuple(request.seed_list.seeds)
    elif which == "seed_range":
        if request.seed_range.count == 0:
            raise InvalidArgument("seed_range.count must be at least 1")
        if request.seed_range.start < 0:
            raise InvalidArgument("seed_range.start must be >= 0")
        seeds = tuple(range(request.seed_range.start, request.seed_range.start + request.seed_range.count))
    else:
        raise InvalidArgument("set seed_list or seed_range")
    if not seeds:
        raise InvalidArgument("seed_list.seeds is empty")
    if len(seeds) > settings.stylegan_max_seeds:
        raise InvalidArgument(
            f"{len(seeds)} seeds requested, at most {settings.stylegan_max_seeds} per request; "
            "split them into several requests"
        )
    if any(s < 0 for s in seeds):
        raise InvalidArgument("seeds must be >= 0")
    psi = request.truncation_psi if request.HasField("truncation_psi") else 1.0
    if not 0.0 <= psi <= 1.0:
        raise InvalidArgument(f"truncation_psi must be in [0, 1], got {psi}")
    bound = request.truncation_bound if request.HasField("truncation_bound") else 0.7
    if not bound > 0:
        raise InvalidArgument(f"truncation_bound must be > 0, got {bound}")
    if request.latent_distribution not in _MODES:
        raise InvalidArgument(f"unknown latent_distribution {request.latent_distribution}")
    batch = request.batch_size or settings.stylegan_batch_size
    if batch > 256:
        raise InvalidArgument(f"batch_size {batch} is too large; use at most 256")
    return SampleParams(
        seeds=seeds,
        truncation_psi=psi,
        latent_mode=_MODES[request.latent_distribution],  # type: ignore[arg-type]
        truncation_bound=bound,
        random_noise=request.noise_mode == stylegan_pb2.NOISE_MODE_RANDOM,
        batch_size=batch,
    )


def output_prefix(request: stylegan_pb2.SampleRequest, settings: StyleGANSettings) -> str:
    prefix = request.output_prefix or request.meta.output_prefix
    if not prefix:
        # Direct calls without a prefix get their own folder, so callers never overwrite each other.
        prefix = f"{settings.stylegan_output_prefix}/{uuid.uuid4().hex}"
    try:
        return validate_key(prefix.strip("/"))
    except ValueError as exc:
        raise InvalidArgument(f"output_prefix is not a valid object key: {exc}") from None


async def sample(
    sampler: Sampler, store: ObjectStore, request: stylegan_pb2.SampleRequest, settings: StyleGANSettings
) -> stylegan_pb2.SampleResponse:
    """Sample, store each image as ``<prefix>/seed-<seed>.png`` and describe how they were made.

    Keys depend only on the prefix and the seed, so a retried task overwrites its own
    outputs with identical images instead of adding new ones.
    """
    params = sample_params(request, settings)
    prefix = output_prefix(request, settings)
    started = time.perf_counter()
    samples = await asyncio.to_thread(sampler.sample, params)
    response = stylegan_pb2.SampleResponse()
    for s in samples:
        ref = await store_image(store, f"{prefix}/seed-{s.seed}.png", s.image)
        if request.inline_images:
            # ImageRef.source is a oneof: the caller asked for bytes, the stored copy stays for retries.
            ref.inline_data = inline_ref(s.image).inline_data
        out = response.samples.add(seed=s.seed, image=ref)
        if request.return_latents:
            out.w_latent.extend(s.w.tolist())
    parameters = {k: v for k, v in asdict(params).items() if k != "seeds"}
    license_note = getattr(sampler, "license_note", None)
    if license_note:  # e.g. the MobileStyleGAN demo backend: non-commercial weights
        parameters["license"] = license_note
    response.provenance.CopyFrom(
        provenance(
            "stylegan", [sampler.model], parameters, started, seeds=list(params.seeds), device=sampler.device
        )
    )
    return response
