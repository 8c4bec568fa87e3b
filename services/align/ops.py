"""The align service's operations on protobuf messages, shared by the gRPC servicer and the NATS stages.

Validation lives here so both adapters reject the same bad requests with the same words.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict

import numpy as np

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.images import read_image, store_image
from ganfolk.runtime.models import provenance
from ganfolk.runtime.outputs import output_prefix, resolve_prefix
from ganfolk.runtime.protos import optional
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import align_pb2, common_pb2
from services.align import core
from services.align.config import AlignSettings
from services.align.core import Aligner, AlignParams, InpaintName, Progress

_DETECTORS = {
    align_pb2.FACE_DETECTOR_UNSPECIFIED: "hog",
    align_pb2.FACE_DETECTOR_HOG: "hog",
    align_pb2.FACE_DETECTOR_CNN: "cnn",
}
_SELECTIONS = {
    align_pb2.FACE_SELECTION_UNSPECIFIED: "largest",
    align_pb2.FACE_SELECTION_LARGEST: "largest",
    align_pb2.FACE_SELECTION_ALL: "all",
}
_INPAINT = {
    align_pb2.INPAINT_METHOD_UNSPECIFIED: "auto",
    align_pb2.INPAINT_METHOD_AUTO: "auto",
    align_pb2.INPAINT_METHOD_LAMA: "lama",
    align_pb2.INPAINT_METHOD_TELEA: "telea",
}
OUTPUT_SIZES = (512, 1024)
LOOSENESS_RANGE = (0.5, 4.0)


def align_params(p: align_pb2.AlignParams, settings: AlignSettings) -> AlignParams:
    """Check AlignParams and apply defaults; InvalidArgument says what to fix."""
    size = p.output_size or settings.align_output_size
    if size not in OUTPUT_SIZES:
        raise InvalidArgument(
            f"params.output_size must be 512 or 1024 (or 0 for {settings.align_output_size}), got {size}"
        )
    looseness = optional(p, "looseness", settings.align_looseness)
    lo, hi = LOOSENESS_RANGE
    if not lo <= looseness <= hi:
        raise InvalidArgument(
            f"params.looseness must be in [{lo}, {hi}] (1.0 = FFHQ's crop), got {looseness:g}"
        )
    if p.detector not in _DETECTORS:
        raise InvalidArgument(
            f"unknown params.detector {p.detector}; use FACE_DETECTOR_HOG or FACE_DETECTOR_CNN"
        )
    if p.selection not in _SELECTIONS:
        raise InvalidArgument(f"unknown params.selection {p.selection}; use FACE_SELECTION_LARGEST or _ALL")
    if p.inpaint_method not in _INPAINT:
        raise InvalidArgument(f"unknown params.inpaint_method {p.inpaint_method}")
    return AlignParams(
        output_size=size,
        looseness=round(float(looseness), 6),
        detector=_DETECTORS[p.detector],  # type: ignore[arg-type]
        selection=_SELECTIONS[p.selection],  # type: ignore[arg-type]
        inpaint=p.inpaint,
        inpaint_method=_INPAINT[p.inpaint_method],  # type: ignore[arg-type]
    )


def _max_inline(settings: AlignSettings) -> int:
    return settings.max_inline_image_mb << 20


async def align_face(
    aligner: Aligner,
    store: ObjectStore,
    request: align_pb2.AlignFaceRequest,
    settings: AlignSettings,
    task: common_pb2.TaskMeta | None = None,
) -> align_pb2.AlignFaceResponse:
    """Align the face(s) of one image; stores ``<prefix>/face-<i>.png`` and ``face-<i>-mask.png``.

    ``task``: the NATS task this runs for; None for a direct gRPC call, whose outputs go under
    ``direct/`` and never into a job's folder (see :mod:`ganfolk.runtime.outputs`).
    """
    params = align_params(request.params, settings)
    if not request.HasField("image"):
        raise InvalidArgument("image is required: set image.uri or image.inline_data")
    prefix = output_prefix(request, settings.align_output_prefix, task)
    started = time.perf_counter()
    img = await read_image(store, request.image, settings.max_image_pixels, _max_inline(settings))
    faces = await asyncio.to_thread(aligner.align_or_raise, np.asarray(img), params)
    response = align_pb2.AlignFaceResponse()
    inline = request.inline_result
    # Every face's image and mask are encoded and written at once: the encodes are independent.
    refs = await asyncio.gather(
        *(
            store_image(store, f"{prefix}/face-{i}{suffix}.png", pixels, inline=inline)
            for i, face in enumerate(faces)
            for suffix, pixels in (("", face.image), ("-mask", face.mask))
        )
    )
    for i, face in enumerate(faces):
        out = response.faces.add(rotation_degrees=face.rotation_degrees)
        out.image.CopyFrom(refs[2 * i])
        out.mask.CopyFrom(refs[2 * i + 1])
        out.landmarks.extend(align_pb2.Point(x=float(x), y=float(y)) for x, y in face.landmarks)
        left, top, right, bottom = face.box
        out.face_box.CopyFrom(align_pb2.Box(left=left, top=top, right=right, bottom=bottom))
    used = [f.inpainted_with for f in faces]
    parameters = asdict(params) | {
        "faces_found": len(faces),
        "inpainted_with": next((u for u in used if u), None),
    }
    response.provenance.CopyFrom(
        provenance(
            "align",
            aligner.models_for(params.detector, "lama" if "lama" in used else None),
            parameters,
            started,
            fallbacks=core.fallbacks_of(used),
            device=aligner.device,
        )
    )
    return response


def _mask_array(img: np.ndarray) -> np.ndarray:
    return (img.max(axis=2) > 127).astype(np.uint8) * 255


async def inpaint(
    aligner: Aligner,
    store: ObjectStore,
    request: align_pb2.InpaintRequest,
    settings: AlignSettings,
    task: common_pb2.TaskMeta | None = None,
) -> align_pb2.InpaintResponse:
    """Fill the white area of ``mask`` in ``image``; stores ``<prefix>/inpainted.png``.

    ``task`` as in :func:`align_face`.
    """
    if not request.HasField("image"):
        raise InvalidArgument("image is required: set image.uri or image.inline_data")
    if not request.HasField("mask"):
        raise InvalidArgument("mask is required: a single-channel image, white = fill")
    if request.method not in _INPAINT:
        raise InvalidArgument(f"unknown method {request.method}; use INPAINT_METHOD_AUTO, _LAMA or _TELEA")
    method: InpaintName = _INPAINT[request.method]  # type: ignore[assignment]
    aligner.resolve_inpaint(method)  # fail before reading images when LaMa is asked for but absent
    prefix = output_prefix(request, settings.align_output_prefix, task)
    started = time.perf_counter()
    img = np.asarray(await read_image(store, request.image, settings.max_image_pixels, _max_inline(settings)))
    msk = np.asarray(await read_image(store, request.mask, settings.max_image_pixels, _max_inline(settings)))
    if img.shape[:2] != msk.shape[:2]:
        raise InvalidArgument(
            f"mask is {msk.shape[1]}x{msk.shape[0]} but the image is {img.shape[1]}x{img.shape[0]}; "
            "send a mask of the same size"
        )
    mask = _mask_array(msk)
    filled, used = await asyncio.to_thread(aligner.inpaint, img, mask, method)
    response = align_pb2.InpaintResponse()
    response.image.CopyFrom(
        await store_image(store, f"{prefix}/inpainted.png", filled, inline=request.inline_result)
    )
    parameters = {
        "method": method,
        "used": used,
        "masked_fraction": float((mask > 0).mean()),
        "telea_radius": aligner.telea_radius if used == "telea" else None,
    }
    response.provenance.CopyFrom(
        provenance(
            "align",
            aligner.models_for(None, used),
            parameters,
            started,
            fallbacks=core.fallbacks_of([used]),
            device=aligner.device,
        )
    )
    return response


def destination_key(
    request: align_pb2.PrepareDatasetRequest, store: ObjectStore, task: common_pb2.TaskMeta | None = None
) -> str:
    """The store prefix a dataset run writes under: the request's ``destination`` (a prefix or a
    URI in this store), else its task's ``output_prefix``. A direct call's lands under ``direct/``
    and never in a job's folder, as :func:`~ganfolk.runtime.outputs.output_prefix` decides.
    """
    dest = request.destination or (task.output_prefix if task is not None else request.meta.output_prefix)
    if not dest:
        raise InvalidArgument("destination is required: a store prefix (or s3:// URI) for the aligned set")
    if "://" in dest:
        try:
            dest = store.key_from_uri(dest.rstrip("/"))
        except ValueError as exc:
            raise InvalidArgument(f"destination must be in this service's object store: {exc}") from None
    return resolve_prefix(dest, "", task, "destination")


def _message(p: Progress) -> align_pb2.PrepareDatasetResponse:
    return align_pb2.PrepareDatasetResponse(
        total=p.total,
        processed=p.processed,
        skipped=p.skipped,
        current=p.current,
        manifest_uri=p.manifest_uri,
        done=p.done,
    )


class Cancelled(Exception):
    """The caller went away; the dataset run stops after the current file (it resumes later)."""


async def prepare_dataset(
    aligner: Aligner,
    store: ObjectStore,
    request: align_pb2.PrepareDatasetRequest,
    settings: AlignSettings,
    task: common_pb2.TaskMeta | None = None,
) -> AsyncIterator[align_pb2.PrepareDatasetResponse]:
    """Progress after every file, then a last message with ``done=True`` and the manifest URI.

    Local folders are read only under GANFOLK_ALIGN_LOCAL_SOURCE_ROOTS (or inside a local
    store); ``task`` as in :func:`align_face`.
    """
    params = align_params(request.params, settings)
    if not request.source:
        raise InvalidArgument("source is required: a folder path, file:///folder or s3://bucket/prefix")
    if params.inpaint:
        aligner.resolve_inpaint(params.inpaint_method)
    dest = destination_key(request, store, task)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Progress] = asyncio.Queue()
    stop = threading.Event()

    def on_progress(p: Progress) -> None:
        if stop.is_set():
            raise Cancelled()
        loop.call_soon_threadsafe(queue.put_nowait, p)

    work = asyncio.ensure_future(
        asyncio.to_thread(
            core.prepare_dataset,
            aligner,
            store,
            request.source,
            dest,
            params,
            settings.max_image_pixels,
            on_progress,
            settings.align_max_dataset_files,
            settings.local_source_roots(),
        )
    )
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                p = getter.result()
                yield _message(p)
                if p.done:
                    break
                continue
            getter.cancel()
            work.result()  # raises the core's error
            while not queue.empty():  # drain what came before the end
                p = queue.get_nowait()
                yield _message(p)
                if p.done:
                    return
            return
    finally:
        stop.set()
        if not work.done():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(work)
