"""Dataset preparation throughput on CPU: 1 vs 2 worker processes (a benchmark, not a test).

Each task is what ``ganfolk dataset prepare`` does per image -- decode, greyscale and pHash
measurements, dlib detection + 68 landmarks, the looser-than-FFHQ warp to ``--size`` px plus the
256 px sharpness probe, inpainting of the rotated-in border (LaMa when
GANFOLK_ALIGN_LAMA_CHECKPOINT is set, else OpenCV Telea) and PNG encoding -- on scikit-image's
astronaut turned by a few degrees (so every crop has a border to fill) and scaled to
``--side`` px, a typical photo.

Printed: images/s in this process, then through a warmed pool of 1 and of 2 spawned processes
(the start-up, which loads dlib's models in each process, timed apart), and the 2:1 speed-up;
then whole ``prepare()`` runs with ``--workers 1`` and ``2`` on a collection of the same
images, start-up included. Prints, never asserts.

    python bench/dataset.py [--images 24] [--side 1024] [--size 512]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from services.dataset.collect import CollectOptions, collect  # noqa: E402
from services.dataset.location import open_location  # noqa: E402
from services.dataset.prepare import PrepareOptions, init_worker, prepare, process_image  # noqa: E402
from services.dataset.sources import Candidate  # noqa: E402


def photos(n: int, side: int) -> list[bytes]:
    """``n`` JPEG photos of the astronaut, each turned a different few degrees."""
    base = np.ascontiguousarray(data.astronaut())
    out = []
    for i in range(n):
        degrees = -9 + 18 * i / max(1, n - 1)
        m = cv2.getRotationMatrix2D((256, 256), degrees, 1.0)
        turned = cv2.warpAffine(base, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
        img = Image.fromarray(turned).resize((side, side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _warm(_: int) -> int:
    return os.getpid()


def pool_rate(images: list[bytes], options: PrepareOptions, workers: int) -> tuple[float, float]:
    """(images/s once warm, start-up seconds) through a pool of ``workers`` spawned processes."""
    ctx = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker, initargs=({},)) as pool:
        # One warm-up task per process: every worker has loaded its models before the clock starts.
        list(pool.map(process_image, images[:workers], [0] * workers, [options] * workers))
        startup = time.perf_counter() - started
        t = time.perf_counter()
        results = list(pool.map(process_image, images, [0] * len(images), [options] * len(images)))
        elapsed = time.perf_counter() - t
    ok = sum(1 for r in results if r.get("ok"))
    if ok != len(images):
        print(f"  note: {len(images) - ok} of {len(images)} images failed a filter", file=sys.stderr)
    return len(images) / elapsed, startup


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--side", type=int, default=1024, help="source photo side in px")
    parser.add_argument("--size", type=int, default=512, help="training size in px")
    args = parser.parse_args()

    images = photos(args.images, args.side)
    options = PrepareOptions(size=args.size, min_sharpness=0.0)
    print(f"{args.images} photos of {args.side} px -> {args.size} px; {os.cpu_count()} CPUs visible")

    init_worker({})
    process_image(images[0], 0, options)  # warm-up
    t = time.perf_counter()
    results = [process_image(img, 0, options) for img in images]
    inline = len(images) / (time.perf_counter() - t)
    used = {r.get("inpainted_with") for r in results if r.get("ok")}
    print(f"in this process:     {inline:6.2f} images/s (inpainting: {', '.join(sorted(map(str, used)))})")

    rate1, start1 = pool_rate(images, options, 1)
    rate2, start2 = pool_rate(images, options, 2)
    print(f"pool of 1 process:   {rate1:6.2f} images/s (start-up {start1:.1f} s)")
    print(f"pool of 2 processes: {rate2:6.2f} images/s (start-up {start2:.1f} s)")
    print(f"2 vs 1 processes:    {rate2 / rate1:6.2f}x")

    with tempfile.TemporaryDirectory(prefix="ganfolk-bench-dataset-") as tmp:
        raw = open_location(f"{tmp}/raw/photos")
        candidates = [
            Candidate(f"bench-{i:04d}", "CC BY 2.0", "bench", f"photo {i}", "", f"bench:{i}", data=img)
            for i, img in enumerate(images)
        ]
        collect(raw, candidates, CollectOptions("urls", len(images), 40_000_000), progress=False)
        walls = {}
        for workers in (1, 2):
            out = open_location(f"{tmp}/prepared-{workers}")
            # No dedupe: the turned copies are deliberately alike, and every image should be aligned.
            run = PrepareOptions(size=args.size, min_sharpness=0.0, dup_distance=-1, workers=workers)
            t = time.perf_counter()
            report = prepare(open_location(f"{tmp}/raw"), out, run, progress=False)
            walls[workers] = time.perf_counter() - t
            kept = sum(report.tally.kept.values())
            print(
                f"prepare --workers {workers}:  {walls[workers]:6.2f} s for {report.aligned} images "
                f"({kept} kept), {report.aligned / walls[workers]:.2f} images/s with start-up"
            )
        print(f"prepare 2 vs 1:      {walls[1] / walls[2]:6.2f}x")


if __name__ == "__main__":
    main()
