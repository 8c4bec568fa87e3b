"""Super-resolution quality and cost, backend by backend (a benchmark, not a test).

scikit-image's astronaut (512 x 512) is downscaled 4x (PIL bicubic, antialiased)
and upscaled back with every backend available here.  Printed side by side:
PSNR against the original, sharpness (variance of the Laplacian of the grey
image; the original's is the reference), and throughput in output megapixels
per second.  Then the torch RRDBNet upscales a ``--mem-input`` px astronaut
(default 256 -> 1024) untiled and tiled, each in a fresh process, to compare
time and peak memory: growth of the kernel's peak-RSS mark (VmHWM, reset just
before the run; ru_maxrss where that is unavailable), tracemalloc's peak for the
Python/numpy side, and the CUDA allocator's peak on a GPU.

Without ``--rrdbnet`` the torch backend has RANDOM weights (x4plus
architecture): its PSNR and sharpness say nothing about Real-ESRGAN, only its
speed and memory are meaningful.

    python bench/upscale_quality.py [--rrdbnet RealESRGAN_x4plus.pth] [--device cuda]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio  # noqa: E402

from services.upscale.backends import (  # noqa: E402
    BackendUnavailable,
    LanczosBackend,
    NcnnRealESRGANBackend,
    SRBackend,
    TorchRRDBNetBackend,
)
from services.upscale.rrdbnet import RRDBNetConfig  # noqa: E402


def sharpness(img: np.ndarray) -> float:
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _proc_status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    hwm = _proc_status_mib("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_torch_backend(args: argparse.Namespace, tile: int) -> TorchRRDBNetBackend:
    opts: dict[str, Any] = {"device": args.device, "tile": tile, "overlap": args.overlap}
    if args.rrdbnet:
        return TorchRRDBNetBackend.from_path(args.rrdbnet, **opts)
    cfg = RRDBNetConfig(num_block=args.random_blocks)
    return TorchRRDBNetBackend.with_random_weights(cfg, seed=0, **opts)


def _measure_child(args: argparse.Namespace, tile: int, low: np.ndarray, queue: Any) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    backend = make_torch_backend(args, tile)
    backend.upscale(low[:16, :16])  # warm-up: kernels, allocator
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    # VmHWM is per process image (ru_maxrss would carry the parent's peak across exec)
    reset = _reset_peak_rss()
    base = _proc_status_mib("VmRSS") if reset else _peak_rss_mib()
    tracemalloc.start()
    t0 = time.perf_counter()
    out = backend.upscale(low)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _peak_rss_mib()
    queue.put(
        {
            "seconds": seconds,
            "mpix_s": out.shape[0] * out.shape[1] / 1e6 / seconds,
            "rss_growth_mib": peak - (base or 0.0),
            "rss_peak_mib": peak,
            "tracemalloc_peak_mib": py_peak / 2**20,
            "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            "shape": out.shape,
        }
    )


def measure_in_fresh_process(args: argparse.Namespace, tile: int, low: np.ndarray) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure_child, args=(args, tile, low, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rrdbnet", help="Real-ESRGAN RRDBNet .pth (else random weights, labelled as such)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=128, help="tile size (input px) for the tiled torch run")
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--random-blocks", type=int, default=23, help="RRDB blocks of the random model")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-ncnn", action="store_true")
    parser.add_argument(
        "--mem-input", type=int, default=256, help="input side (px) for the tiled-vs-untiled memory runs"
    )
    args = parser.parse_args()

    original = skdata.astronaut()
    h, w = original.shape[:2]
    low = np.asarray(Image.fromarray(original).resize((w // 4, h // 4), Image.Resampling.BICUBIC))
    print(f"astronaut {w}x{h} -> bicubic /4 -> {low.shape[1]}x{low.shape[0]} -> x4 back to {w}x{h}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}")
    print()

    backends: list[SRBackend] = [LanczosBackend()]
    if not args.no_ncnn:
        try:
            backends.append(NcnnRealESRGANBackend())
        except BackendUnavailable as exc:
            print(f"(ncnn backend skipped: {exc})")
    torch_backend = make_torch_backend(args, tile=max(h, w))  # untiled for the quality run
    backends.append(torch_backend)

    rows = []
    for backend in backends:
        backend.upscale(low[:16, :16])  # warm-up
        t0 = time.perf_counter()
        out = backend.upscale(low, scale=4)
        seconds = time.perf_counter() - t0
        assert out.shape == original.shape, (backend.name, out.shape)
        psnr = peak_signal_noise_ratio(original, out, data_range=255)
        rows.append((backend.name, psnr, sharpness(out), h * w / 1e6 / seconds, seconds, backend.model_id))

    print(f"{'backend':34s} {'PSNR dB':>8s} {'LapVar':>9s} {'MP/s':>8s} {'seconds':>8s}")
    print(f"{'original (reference)':34s} {'inf':>8s} {sharpness(original):9.1f}")
    for name, psnr, sharp, mps, sec, _ in rows:
        print(f"{name:34s} {psnr:8.2f} {sharp:9.1f} {mps:8.3f} {sec:8.2f}")
    print()
    for name, *_, model_id in rows:
        print(f"  {name}: {model_id}")
    if not args.rrdbnet:
        print(
            "  NOTE: torch-rrdbnet ran with RANDOM weights (no --rrdbnet): "
            "its PSNR and sharpness are meaningless, only its cost is"
        )
    print()

    side = args.mem_input
    mem_in = np.asarray(Image.fromarray(original).resize((side, side), Image.Resampling.BICUBIC))
    print(f"torch RRDBNet, {side}x{side} -> {4 * side}x{4 * side}, each run in a fresh process:")
    header = f"{'mode':22s} {'seconds':>8s} {'MP/s':>7s} {'peak RSS growth MiB':>20s} {'py heap MiB':>12s}"
    if args.device.startswith("cuda"):
        header += f" {'CUDA peak MiB':>14s}"
    print(header)
    for label, tile in (("untiled", side), (f"tiled {args.tile}+{args.overlap}", args.tile)):
        r = measure_in_fresh_process(args, tile, mem_in)
        line = (
            f"{label:22s} {r['seconds']:8.2f} {r['mpix_s']:7.3f} {r['rss_growth_mib']:20.1f} "
            f"{r['tracemalloc_peak_mib']:12.2f}"
        )
        if r["cuda_peak_mib"] is not None:
            line += f" {r['cuda_peak_mib']:14.1f}"
        print(line)
    print(
        "(peak RSS growth: the process's peak resident memory during the upscale minus its resident memory "
        "just before, model loaded; py heap: tracemalloc's peak, Python/numpy allocations only)"
    )


if __name__ == "__main__":
    main()
