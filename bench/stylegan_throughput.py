"""StyleGAN2 sampling throughput (a benchmark, not a test).

1. Our port's fast path vs a plain eager run of the SAME module (same random weights,
   ``GeneratorConfig.rosinality(size, style_dim=512, n_mlp=8, channel_multiplier=2)``) at
   64/128/256 px on CPU, in images/s and as ratios to the plain run:

   - ``plain``: eager, one image per call, grad mode on (a module called as is);
   - ``no_grad b1``: eager, one image per call, ``torch.no_grad()`` (the fairer baseline);
   - ``inference bB``: ``torch.inference_mode()``, batch B — what ``Sampler.sample`` does;
   - ``+channels_last bB``: the same with module and activations in channels_last;
   - ``+compile bB``: the same under ``torch.compile`` (only with ``--compile``: inductor's
     C++ build takes minutes on a small CPU; compile time is excluded, reported apart).

   With a CUDA GPU, the same at 512 px plus fp16 (module and inputs in half precision).
2. Service vs in-process: ``Sample`` over gRPC (the stylegan service started in-process on a
   loopback port, random weights) vs ``Sampler.sample`` on the same loaded sampler, same
   seeds and batch; the service also PNG-encodes and stores every image.
3. The MobileStyleGAN demo backend (OpenVINO IR, 1024 px, batch 1) when installed.

Weights are random: only speed is meaningful.

    python bench/stylegan_throughput.py [--compile] [--images 32] [--batch 8] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from services.stylegan.core import SampleParams  # noqa: E402
from services.stylegan.model import Generator, GeneratorConfig, build_generator  # noqa: E402

Runner = Callable[[int], None]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def images_per_s(run: Runner, n_images: int, batch: int, device: str) -> float:
    """``run(b)`` makes b images; one warm-up image, then ``n_images`` timed."""
    run(1)
    sync(device)
    started = time.perf_counter()
    done = 0
    while done < n_images:
        b = min(batch, n_images - done)
        run(b)
        done += b
    sync(device)
    return done / (time.perf_counter() - started)


def make_generator(size: int, device: str) -> Generator:
    torch.manual_seed(0)
    cfg = GeneratorConfig.rosinality(size, style_dim=512, n_mlp=8, channel_multiplier=2)
    return build_generator(cfg, device=device).eval()


def channels_last(module: Generator) -> Generator:
    """Every 4-D parameter and buffer in channels_last (the modulated weights are 5-D: left alone)."""
    for t in [*module.parameters(), *module.buffers()]:
        if t.ndim == 4:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
    return module


def z(batch: int, device: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(batch, 512, device=device, dtype=dtype)


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield


def bench_size(size: int, n_images: int, batch: int, device: str, compile_: bool, fp16: bool) -> None:
    g = make_generator(size, device)
    params = sum(p.numel() for p in g.parameters()) / 1e6
    rows: list[tuple[str, float, str]] = []

    def eager(mode: Callable[[], contextlib.AbstractContextManager[Any]], module: Generator) -> Runner:
        def run(b: int) -> None:
            with mode():
                for _ in range(b):
                    module([z(1, device)], randomize_noise=False)

        return run

    n_plain = max(1, n_images // 4)
    plain = images_per_s(eager(nothing, g), n_plain, 1, device)
    rows.append(("plain eager b1 (grad on)", plain, f"{n_plain} images"))
    no_grad = images_per_s(eager(torch.no_grad, g), n_images, 1, device)
    rows.append(("no_grad eager b1", no_grad, ""))

    def batched(module: Callable[..., object], dtype: torch.dtype = torch.float32) -> Runner:
        def run(b: int) -> None:
            with torch.inference_mode():
                module([z(b, device, dtype)], randomize_noise=False)

        return run

    rows.append((f"inference_mode b{batch}", images_per_s(batched(g), n_images, batch, device), ""))
    g_cl = channels_last(copy.deepcopy(g))
    rows.append((f"+channels_last b{batch}", images_per_s(batched(g_cl), n_images, batch, device), ""))
    if compile_:
        compiled = torch.compile(g_cl, dynamic=False)
        started = time.perf_counter()
        batched(compiled)(batch)
        note = f"compile {time.perf_counter() - started:.0f} s excluded"
        rows.append(
            (f"+torch.compile b{batch}", images_per_s(batched(compiled), n_images, batch, device), note)
        )
    else:
        rows.append((f"+torch.compile b{batch}", float("nan"), "skipped (pass --compile)"))
    if fp16:
        g_half = copy.deepcopy(g_cl).half()
        rows.append(
            (
                f"+fp16 b{batch}",
                images_per_s(batched(g_half, torch.float16), n_images, batch, device),
                "",
            )
        )
    print(f"\n{size} px on {device} ({params:.1f} M params, {n_images} timed images per row)")
    print(f"  {'variant':28s} {'images/s':>9s} {'x plain':>8s} {'x no_grad':>9s}")
    for name, rate, note in rows:
        print(f"  {name:28s} {rate:9.2f} {rate / plain:8.2f} {rate / no_grad:9.2f}  {note}")


async def service_vs_in_process(size: int, n_seeds: int, batch: int) -> None:
    from ganfolk.v1 import stylegan_pb2, stylegan_pb2_grpc
    from services.stylegan.main import SERVICE
    from tests.fixtures.services import serving

    os.environ.update(
        GANFOLK_ALLOW_RANDOM_WEIGHTS="1",
        GANFOLK_STYLEGAN_RANDOM_SIZE=str(size),
        GANFOLK_STYLEGAN_RANDOM_STYLE_DIM="512",
    )
    os.environ.pop("GANFOLK_STYLEGAN_CHECKPOINT", None)
    os.environ.pop("GANFOLK_STYLEGAN_BACKEND", None)
    seeds = list(range(n_seeds))
    with tempfile.TemporaryDirectory() as tmp:
        async with serving(SERVICE, store_url=f"{tmp}/objects", worker_enabled=False) as (running, channel):
            sampler = running.holder.get()
            stub = stylegan_pb2_grpc.StyleGANServiceStub(channel)
            request = stylegan_pb2.SampleRequest(
                seed_list=stylegan_pb2.SeedList(seeds=seeds), batch_size=batch
            )
            inline = stylegan_pb2.SampleRequest(
                seed_list=stylegan_pb2.SeedList(seeds=seeds), batch_size=batch, inline_images=True
            )
            params = SampleParams(seeds=tuple(seeds), batch_size=batch)
            await stub.Sample(request)  # warm-up (and the first request's set-up)
            sampler.sample(params)
            timings: dict[str, float] = {}
            for name, call in (
                ("in-process Sampler.sample", lambda: asyncio.to_thread(sampler.sample, params)),
                ("gRPC Sample (+PNG, store)", lambda: stub.Sample(request)),
                ("gRPC Sample inline images", lambda: stub.Sample(inline)),
            ):
                started = time.perf_counter()
                await call()
                timings[name] = n_seeds / (time.perf_counter() - started)
    direct = timings["in-process Sampler.sample"]
    print(
        f"\nservice vs in-process ({size} px, style_dim 512, n_mlp 2, channel_multiplier 1, "
        f"{n_seeds} seeds, batch {batch}, one timed request each)"
    )
    for name, rate in timings.items():
        print(f"  {name:28s} {rate:9.2f} images/s  x{rate / direct:.2f} of in-process")


def mobile(n_images: int, output_size: int | None) -> None:
    try:
        from services.stylegan.mobile import MobileStyleGANSampler

        started = time.perf_counter()
        sampler = MobileStyleGANSampler(output_size=output_size)
    except Exception as exc:  # not installed: say so and go on
        print(f"\nMobileStyleGAN: skipped ({exc})")
        return
    load = time.perf_counter() - started
    sampler.sample(SampleParams(seeds=(0,), truncation_psi=0.7))  # warm-up + mean latent
    started = time.perf_counter()
    sampler.sample(SampleParams(seeds=tuple(range(1, n_images + 1)), truncation_psi=0.7))
    rate = n_images / (time.perf_counter() - started)
    print(
        f"\nMobileStyleGAN (OpenVINO CPU, 1024 px synthesis, output {sampler.size} px, batch 1): "
        f"{rate:.2f} images/s over {n_images} images (load + compile {load:.1f} s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--images", type=int, default=32, help="timed images per row at 64 px (halved per size up)"
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build on CPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--mobile-images", type=int, default=4)
    ap.add_argument("--service-size", type=int, default=128)
    ap.add_argument("--service-seeds", type=int, default=16)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"CUDA {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}"
    )
    for i, size in enumerate(int(s) for s in args.sizes.split(",")):
        n = max(args.batch, args.images >> i)
        if n < args.images:
            print(f"(at {size} px: {n} timed images instead of {args.images}, to keep the CPU run short)")
        bench_size(size, n, args.batch, "cpu", args.compile, fp16=False)
    if torch.cuda.is_available():
        bench_size(512, 64, 16, "cuda", args.compile, fp16=True)
    else:
        print("\n512 px fp16 on GPU: skipped (no CUDA device)")
    asyncio.run(service_vs_in_process(args.service_size, args.service_seeds, args.batch))
    mobile(args.mobile_images, 512)


if __name__ == "__main__":
    main()
