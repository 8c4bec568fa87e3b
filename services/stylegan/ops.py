"""The Sample operation on protobuf messages, shared by the gRPC servicer and the NATS stage.

Validation lives here so both adapters reject the same bad requests with the same words.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

from ganfolk.runtime import limits
from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.images import store_image
from ganfolk.runtime.models import provenance
from ganfolk.runtime.outputs import output_prefix
from ganfolk.runtime.protos import with_optionals
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import common_pb2, stylegan_pb2
from services.stylegan.config import StyleGANSettings
from services.stylegan.core import SampleParams, Sampler

_MODES = {
    stylegan_pb2.LATENT_DISTRIBUTION_UNSPECIFIED: "truncated",
    stylegan_pb2.LATENT_DISTRIBUTION_TRUNCATED_NORMAL: "truncated",
    stylegan_pb2.LATENT_DISTRIBUTION_NORMAL: "normal",
}


# Seeds travel as protobuf int64 (SeedList.seeds, SeedRange.start, SampledImage.seed): a seed
# above this cannot be returned, so it is refused before any image is drawn or stored. The
# coordinator checks a job's seed + num_samples against the same bound (limits.INT64_MAX).
MAX_SEED = limits.INT64_MAX


def check_seed_range(start: int, count: int, max_seeds: int) -> None:
    """InvalidArgument unless ``count`` seeds from ``start`` fit one request and int64.

    Arithmetic only: it runs before any list of seeds is built, so a huge ``count`` costs nothing.
    """
    if count < 1:
        raise InvalidArgument("seed_range.count must be at least 1")
    if count > max_seeds:
        raise InvalidArgument(
            f"seed_range.count {count:,} is over the limit of {max_seeds:,} seeds per request; "
            "split them into several requests"
        )
    if start < 0:
        raise InvalidArgument("seed_range.start must be >= 0")
    if start > MAX_SEED - (count - 1):
        raise InvalidArgument(
            f"seed_range {start} + {count} runs past the largest seed, 2**63 - 1 = {MAX_SEED} "
            "(seeds are int64); start lower"
        )


def _seeds(request: stylegan_pb2.SampleRequest, max_seeds: int) -> tuple[int, ...]:
    which = request.WhichOneof("seeds")
    if which == "seed_range":
        start, count = request.seed_range.start, request.seed_range.count
        check_seed_range(start, count, max_seeds)
        return tuple(range(start, start + count))
    if which != "seed_list":
        raise InvalidArgument("set seed_list or seed_range")
    listed = request.seed_list.seeds
    if not listed:
        raise InvalidArgument("seed_list.seeds is empty")
    # Counted before copied: the list is already parsed, but a copy of it need not be made.
    if len(listed) > max_seeds:
        raise InvalidArgument(
            f"seed_list has {len(listed):,} seeds, over the limit of {max_seeds:,} per request; "
            "split them into several requests"
        )
    seeds = tuple(listed)
    if min(seeds) < 0:
        raise InvalidArgument("seeds must be >= 0")
    return seeds


def sample_params(request: stylegan_pb2.SampleRequest, settings: StyleGANSettings) -> SampleParams:
    """Check a SampleRequest and apply defaults; InvalidArgument says what to fix.

    Seed counts and bounds are checked before any seed list is built (see :func:`check_seed_range`).
    """
    seeds = _seeds(request, settings.stylegan_max_seeds)
    if request.latent_distribution not in _MODES:
        raise InvalidArgument(f"unknown latent_distribution {request.latent_distribution}")
    defaults = SampleParams(
        seeds=seeds,
        latent_mode=_MODES[request.latent_distribution],  # type: ignore[arg-type]
        random_noise=request.noise_mode == stylegan_pb2.NOISE_MODE_RANDOM,
        batch_size=request.batch_size or settings.stylegan_batch_size,
    )
    params = with_optionals(defaults, request)  # truncation_psi, truncation_bound
    if not 0.0 <= params.truncation_psi <= 1.0:
        raise InvalidArgument(f"truncation_psi must be in [0, 1], got {params.truncation_psi}")
    if not params.truncation_bound > 0:
        raise InvalidArgument(f"truncation_bound must be > 0, got {params.truncation_bound}")
    if params.batch_size > 256:
        raise InvalidArgument(f"batch_size {params.batch_size} is too large; use at most 256")
    return params


async def sample(
    sampler: Sampler,
    store: ObjectStore,
    request: stylegan_pb2.SampleRequest,
    settings: StyleGANSettings,
    task: common_pb2.TaskMeta | None = None,
) -> stylegan_pb2.SampleResponse:
    """Sample, store each image as ``<prefix>/seed-<seed>.png`` and describe how they were made.

    Keys depend only on the prefix and the seed, so a retried task overwrites its own
    outputs with identical images instead of adding new ones. ``task``: the NATS task this
    runs for; None for a direct gRPC call (outputs under ``direct/``, see :mod:`ganfolk.runtime.outputs`).
    """
    params = sample_params(request, settings)
    prefix = output_prefix(request, settings.stylegan_output_prefix, task)
    started = time.perf_counter()
    samples = await asyncio.to_thread(sampler.sample, params)
    response = stylegan_pb2.SampleResponse()
    # Concurrently: each encode (zlib) and write (fsync) leaves the GIL, so a shard's images
    # overlap instead of queueing. With inline images one encode serves the stored copy
    # (kept for retries and later stages) and the bytes the caller asked for.
    refs = await asyncio.gather(
        *(
            store_image(store, f"{prefix}/seed-{s.seed}.png", s.image, inline=request.inline_images)
            for s in samples
        )
    )
    for s, ref in zip(samples, refs, strict=True):
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
