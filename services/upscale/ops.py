"""The Finish operation on protobuf messages, shared by the gRPC servicer and the NATS stage."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.images import read_image, store_image
from ganfolk.runtime.models import provenance
from ganfolk.runtime.outputs import output_prefix
from ganfolk.runtime.protos import with_optionals
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import common_pb2, upscale_pb2
from services.upscale.config import UpscaleSettings
from services.upscale.core import Finisher, backend_model
from services.upscale.finish import FinishParams

_BACKENDS = {
    upscale_pb2.SUPER_RESOLUTION_BACKEND_UNSPECIFIED: "auto",
    upscale_pb2.SUPER_RESOLUTION_BACKEND_AUTO: "auto",
    upscale_pb2.SUPER_RESOLUTION_BACKEND_TORCH_RRDBNET: "torch",
    upscale_pb2.SUPER_RESOLUTION_BACKEND_NCNN_REALESRGAN: "ncnn",
    upscale_pb2.SUPER_RESOLUTION_BACKEND_LANCZOS: "lanczos",
}


def finish_params(p: upscale_pb2.FinishParams) -> FinishParams:
    """Request params over the article's defaults; FinishParams says what to fix when invalid."""
    return with_optionals(FinishParams(unsharp=p.unsharp), p)


async def finish(
    finisher: Finisher,
    store: ObjectStore,
    request: upscale_pb2.FinishRequest,
    settings: UpscaleSettings,
    task: common_pb2.TaskMeta | None = None,
) -> upscale_pb2.FinishResponse:
    """Vignette → optional unsharp → noise → super-resolution; stored as ``<prefix>/final.png``.

    ``task``: the NATS task this runs for; None for a direct gRPC call, whose outputs go under
    ``direct/`` and never into a job's folder (see :mod:`ganfolk.runtime.outputs`).
    """
    if request.params.backend not in _BACKENDS:
        raise InvalidArgument(f"unknown backend {request.params.backend}")
    try:
        params = finish_params(request.params)
    except ValueError as exc:  # FinishParams checks the values the request sent
        raise InvalidArgument(str(exc)) from None
    backend = _BACKENDS[request.params.backend]
    prefix = output_prefix(request, settings.upscale_output_prefix, task)
    img = await read_image(
        store,
        request.image,
        min(settings.max_image_pixels, settings.upscale_max_input_pixels),
        settings.max_inline_image_mb << 20,
    )
    started = time.perf_counter()
    out, details = await asyncio.to_thread(finisher.run, np.asarray(img), params, backend)
    # With inline_result one encode serves the stored copy (for retries) and the returned bytes.
    ref = await store_image(store, f"{prefix}/final.png", out, inline=request.inline_result)
    used = finisher.backend(backend)
    models, fallbacks = backend_model(used)
    parameters = {**dataclasses.asdict(params), "backend": used.name, "steps": ", ".join(details["steps"])}  # type: ignore[arg-type]
    if used.notes:
        parameters["backend_notes"] = "; ".join(used.notes)
    prov = provenance(
        "upscale",
        models,
        parameters,
        started,
        seeds=[params.noise_seed],
        fallbacks=fallbacks,
        device=finisher.device,
    )
    return upscale_pb2.FinishResponse(image=ref, provenance=prov)
