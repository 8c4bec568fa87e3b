"""Face alignment throughput on CPU (a benchmark, not a test).

For scikit-image's astronaut portrait at 512 px and upscaled to 1024 and 2048 px (a typical
photo), timed apart:

- ``detect``: dlib detection (HOG, upsample per settings, on a copy at most
  ``align_detect_max_side`` px) + the 68-point shape predictor at full resolution;
- ``warp``: FFHQ-style quad, out-of-picture mask and the affine warp to ``--size`` px;
- ``telea``: OpenCV Telea filling of the mask (loose crop, looseness 1.5, so a mask exists).

It prints aligned images/s (detect + warp, single thread of work) and the share of time in
detection vs warping, then the CNN (mmod) detector once, and AlignFace over gRPC (service
started in-process, inline PNG in and out) vs the same alignment in-process, with their ratio.

    python bench/align_throughput.py [--reps 10] [--size 512]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from skimage import data  # noqa: E402

from ganfolk.runtime.settings import load_settings  # noqa: E402
from services.align.config import AlignSettings  # noqa: E402
from services.align.core import AlignParams, load_aligner, telea, warp_face  # noqa: E402


def timed(fn, reps: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    times = []
    out = None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


async def grpc_vs_inprocess(image: np.ndarray, reps: int) -> None:
    """AlignFace over gRPC vs ``Aligner.align`` in this process, timed alternately.

    Alternating the two (rather than timing one block after the other) keeps a shared
    machine's load changes from landing on one side of the ratio only.
    """
    from ganfolk.runtime.images import decode_image, encode_png
    from ganfolk.runtime.storage import LocalStore
    from ganfolk.v1 import align_pb2, align_pb2_grpc, common_pb2
    from services.align.main import SERVICE
    from tests.fixtures.services import serving

    png = encode_png(image)
    settings = load_settings(AlignSettings)
    aligner = load_aligner(settings)
    params = AlignParams(output_size=512, looseness=settings.align_looseness)
    service: list[float] = []
    local: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with serving(SERVICE, store_url=tmp, worker_enabled=False) as (_, channel):
            stub = align_pb2_grpc.AlignServiceStub(channel)
            req = align_pb2.AlignFaceRequest(
                image=common_pb2.ImageRef(inline_data=png), output_prefix="bench", inline_result=True
            )
            await stub.AlignFace(req)  # warm-up
            face = aligner.align(image, params)[0]
            store = LocalStore(Path(tmp) / "parts")
            # What the service does besides aligning, each part timed on its own.
            parts: dict[str, list[float]] = {"decode the request's PNG": [], "encode image + mask": []}
            parts["store image + mask"] = []
            for i in range(reps):
                t = time.perf_counter()
                await stub.AlignFace(req)
                service.append(time.perf_counter() - t)
                t = time.perf_counter()
                aligner.align(image, params)
                local.append(time.perf_counter() - t)
                t = time.perf_counter()
                decode_image(png, settings.max_image_pixels)
                parts["decode the request's PNG"].append(time.perf_counter() - t)
                t = time.perf_counter()
                encoded = [encode_png(face.image), encode_png(face.mask)]
                parts["encode image + mask"].append(time.perf_counter() - t)
                t = time.perf_counter()
                for name, data in zip(("face", "mask"), encoded, strict=True):
                    store.put(f"bench/{i}/{name}.png", data, content_type="image/png")
                parts["store image + mask"].append(time.perf_counter() - t)
    grpc_ms, local_ms = statistics.median(service) * 1000, statistics.median(local) * 1000
    print(
        f"\nAlignFace over gRPC (inline PNG in, decode + align + image and mask stored + inline PNGs out):"
        f" {grpc_ms:.0f} ms/image; in-process align: {local_ms:.0f} ms/image (medians of {reps}, alternating)"
    )
    print(f"  align over gRPC / in-process = {grpc_ms / local_ms:.2f}  (goal <= 1.3)")
    breakdown = ", ".join(f"{name} {statistics.median(v) * 1000:.1f}" for name, v in parts.items())
    print(f"  the service's other work, ms (medians, one after another): {breakdown}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    settings = load_settings(AlignSettings)
    aligner = load_aligner(settings)
    base = np.ascontiguousarray(data.astronaut())
    print(
        f"dlib HOG upsample {settings.align_hog_upsample},"
        f" detection on <= {settings.align_detect_max_side} px,"
        f" output {args.size} px, median of {args.reps}; cv2 threads {cv2.getNumThreads()}"
    )
    cols = ("input", "detect ms", "warp ms", "telea ms", "images/s", "detect %", "warp %")
    print("{:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>7}".format(*cols))
    for side in (512, 1024, 2048):
        img = base if side == 512 else cv2.resize(base, (side, side), interpolation=cv2.INTER_CUBIC)
        det, faces = timed(lambda img=img: aligner.detect(img, "hog"), args.reps)
        face = faces[0]  # type: ignore[index]
        params = AlignParams(output_size=args.size, looseness=1.5)
        warp, aligned = timed(lambda img=img, face=face, p=params: warp_face(img, face, p), args.reps)
        reps = max(3, args.reps // 3)
        fill, _ = timed(lambda a=aligned: telea(a.image, a.mask), reps)  # type: ignore[attr-defined]
        total = det + warp
        print(
            f"{side:>5}x{side:<4} {det * 1000:10.1f} {warp * 1000:8.1f} {fill * 1000:9.1f} {1 / total:9.2f} "
            f"{100 * det / total:8.1f}% {100 * warp / total:6.1f}%"
        )
    if aligner.detector.cnn is not None:
        cnn, _ = timed(lambda: aligner.detect(base, "cnn"), 1)
        print(
            f"\nCNN (mmod) detection + landmarks on 512 px: {cnn * 1000:.0f} ms/image ({1 / cnn:.2f} img/s)"
        )
    asyncio.run(grpc_vs_inprocess(base, max(5, args.reps)))


if __name__ == "__main__":
    main()
