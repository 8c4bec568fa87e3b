"""The Refine operation on protobuf messages, shared by the gRPC servicer and the NATS stage.

Validation lives here so both adapters reject the same bad requests with the same words.

Sizes: ``params.size`` must be a multiple of the VQGAN's downsampling factor (16 for the public f16
models) -- a size that is not is **rejected** (INVALID_ARGUMENT naming the two nearest valid sizes),
never silently changed, so the output is always the size asked for. The init image itself may have
any size or aspect: it is centre-cropped to a square and resized (Lanczos) to ``size`` × ``size``.
Requests whose estimated memory is over the replica's budget fail before any work with
RESOURCE_EXHAUSTED saying to lower ``cutn`` or ``size``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import asdict
from typing import Any

from ganfolk.runtime.errors import InvalidArgument, ResourceExhausted
from ganfolk.runtime.images import read_image, store_image
from ganfolk.runtime.models import provenance
from ganfolk.runtime.outputs import output_prefix
from ganfolk.runtime.protos import with_optionals
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import common_pb2, vqgan_pb2
from services.vqgan.augment import AugmentParams
from services.vqgan.config import VQGANSettings
from services.vqgan.core import VQGANCore
from services.vqgan.refine import Progress, Prompt, RefineParams, RefineResult

# The notebook's defaults, quoted in error messages; the settings override size.
_DEFAULTS = RefineParams()


def prompts_of(request: vqgan_pb2.RefineRequest, settings: VQGANSettings) -> list[Prompt]:
    prompts = [with_optionals(Prompt(p.text.strip()), p) for p in request.prompts if p.text.strip()]
    if not prompts:
        raise InvalidArgument("no prompts: add at least one prompt with non-empty text")
    if len(prompts) > settings.vqgan_max_prompts:
        raise InvalidArgument(f"{len(prompts)} prompts, at most {settings.vqgan_max_prompts} per request")
    if not any(p.weight > 0 for p in prompts):
        raise InvalidArgument("every prompt weight is <= 0: give at least one prompt a positive weight")
    return prompts


def _default_seed(request: vqgan_pb2.RefineRequest) -> int:
    """The seed of a request that sets none."""
    if request.meta.task_id:  # a retried task refines the same way
        return int.from_bytes(hashlib.sha256(request.meta.task_id.encode()).digest()[:4], "big") >> 1
    return secrets.randbelow(2**31)


def augment_params(msg: vqgan_pb2.Augmentations) -> AugmentParams:
    """The request's augmentations over the notebook's defaults; InvalidArgument names a bad one."""
    aug = with_optionals(AugmentParams(enabled=not msg.disabled), msg)
    try:
        aug.validate()
    except ValueError as exc:  # the values came from the request
        raise InvalidArgument(str(exc)) from None
    return aug


def refine_params(request: vqgan_pb2.RefineRequest, settings: VQGANSettings, factor: int) -> RefineParams:
    """Check a RefineRequest's params and apply the defaults; InvalidArgument says what to fix,
    ResourceExhausted says which configured limit (size, cutn) a request is over."""
    defaults = RefineParams(size=settings.vqgan_default_size, seed=_default_seed(request))
    params = with_optionals(defaults, request.params)
    size = params.size
    if size < factor:
        raise InvalidArgument(f"size must be at least the VQGAN downsampling factor {factor}, got {size}")
    if size % factor:
        lower, upper = size - size % factor, size - size % factor + factor
        raise InvalidArgument(
            f"size {size} is not a multiple of the VQGAN downsampling factor {factor}; use {lower} or {upper}"
        )
    if size > settings.vqgan_max_size:
        raise ResourceExhausted(
            f"size {size} px is over this replica's limit of {settings.vqgan_max_size} px "
            "(GANFOLK_VQGAN_MAX_SIZE); lower size"
        )
    if params.iterations < 1:
        raise InvalidArgument(
            f"iterations must be at least 1 (leave it unset for the default of {_DEFAULTS.iterations})"
        )
    if params.iterations > settings.vqgan_max_iterations:
        raise InvalidArgument(
            f"iterations {params.iterations} is over the limit of {settings.vqgan_max_iterations} per request"
        )
    if params.cutn < 1:
        raise InvalidArgument(f"cutn must be at least 1 (leave it unset for the default of {_DEFAULTS.cutn})")
    if params.cutn > settings.vqgan_max_cutn:
        raise ResourceExhausted(
            f"cutn {params.cutn} is over this replica's limit of {settings.vqgan_max_cutn} "
            "(GANFOLK_VQGAN_MAX_CUTN); lower cutn"
        )
    if not 0.0 < params.step_size <= 10.0:
        raise InvalidArgument(f"step_size must be in (0, 10], got {params.step_size}")
    if not 0.0 < params.cut_pow <= 100.0:
        raise InvalidArgument(f"cut_pow must be in (0, 100], got {params.cut_pow}")
    if not params.init_weight >= 0.0:
        raise InvalidArgument(f"init_weight must be >= 0, got {params.init_weight}")
    if params.seed < 0:
        raise InvalidArgument(f"seed must be >= 0, got {params.seed}")
    return dataclasses.replace(params, augment=augment_params(request.params.augmentations))


def _parameters(params: RefineParams, prompts: list[Prompt]) -> dict[str, Any]:
    out = asdict(params)
    out.pop("seed")
    out["augmentations"] = out.pop("augment")
    out["prompts"] = [{"text": p.text, "weight": p.weight} for p in prompts]
    return out


async def refine_stream(
    core: VQGANCore,
    store: ObjectStore,
    request: vqgan_pb2.RefineRequest,
    settings: VQGANSettings,
    should_stop: Callable[[], bool] | None = None,
    task: common_pb2.TaskMeta | None = None,
) -> AsyncGenerator[vqgan_pb2.RefineResponse, None]:
    """Validate, refine in a worker thread, and yield one RefineResponse per iteration (snapshots are
    stored as ``<prefix>/iter-NNNN.png``), then the final one (``<prefix>/final.png``, done=true).

    ``task``: the NATS task this runs for; None for a direct gRPC call, whose outputs go under
    ``direct/`` and never into a job's folder (see :mod:`ganfolk.runtime.outputs`).

    Closing the iterator (a cancelled RPC) or ``should_stop()`` returning True stops the loop before
    its next iteration; the loop then raises :class:`~services.vqgan.refine.RefineStopped`.
    """
    prompts = prompts_of(request, settings)
    params = refine_params(request, settings, core.factor)
    core.check_memory(params.size, params.cutn)  # fail before reading anything
    prefix = output_prefix(request, settings.vqgan_output_prefix, task)
    init = None
    if request.HasField("init_image"):
        init = await read_image(
            store, request.init_image, settings.max_image_pixels, settings.max_inline_image_mb << 20
        )
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Progress] = asyncio.Queue()
    stop = threading.Event()

    def on_progress(p: Progress) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, p)

    def stopping() -> bool:
        return stop.is_set() or (should_stop is not None and should_stop())

    started = time.perf_counter()
    work: asyncio.Future[RefineResult] = asyncio.ensure_future(
        asyncio.to_thread(core.refine, init, prompts, params, on_progress, stopping)
    )
    total = params.iterations

    # The final reply lists them all: NATS progress events are for watchers and may be thinned.
    snapshots: list[common_pb2.ImageRef] = []

    async def message(p: Progress) -> vqgan_pb2.RefineResponse:
        reply = vqgan_pb2.RefineResponse(iteration=p.iteration, total_iterations=total, loss=p.loss)
        if p.snapshot is not None:
            key = f"{prefix}/iter-{p.iteration:04d}.png"
            reply.snapshot.CopyFrom(await store_image(store, key, p.snapshot))
            snapshots.append(reply.snapshot)
        return reply

    getter: asyncio.Future[Progress] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            pending: set[asyncio.Future[Any]] = {getter, work}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield await message(getter.result())
                continue
            getter.cancel()
            while not queue.empty():  # progress queued before the thread returned
                yield await message(queue.get_nowait())
            break
        result = work.result()
        final = await store_image(store, f"{prefix}/final.png", result.image)
        reply = vqgan_pb2.RefineResponse(
            iteration=total,
            total_iterations=total,
            loss=result.losses[-1],
            done=True,
            final_image=final,
        )
        if params.snapshot_every and total % params.snapshot_every == 0:
            reply.snapshot.CopyFrom(final)
        reply.snapshots.extend(snapshots)
        reply.provenance.CopyFrom(
            provenance(
                "vqgan",
                list(core.models),
                _parameters(params, prompts),
                started,
                seeds=[params.seed],
                device=core.device,
            )
        )
        yield reply
    finally:
        stop.set()  # a consumer that went away (cancelled RPC) stops the loop within one iteration
        if getter is not None and not getter.done():
            getter.cancel()
        if not work.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(work)
