"""CLIP throughput, printed as ratios measured in one run (not a timed test).

1. Dynamic batching, in-process: N single-image requests one after another (one forward
   pass each) vs the same N requests made concurrently through the dynamic batcher.
2. Dynamic batching over gRPC: C concurrent callers each sending single-image ``Rank``
   requests, with the batcher on vs off (``GANFOLK_CLIP_DYNAMIC_BATCHING``).
3. ``Rank`` over M images through gRPC vs the same work in-process (decode, preprocess,
   embed with the same batch size, score): the service's overhead (target ratio >= 0.9).

Weights are random (this measures speed, not quality) unless ``--checkpoint`` is given.

    python bench/clip_batching.py                      # ViT-B-32, the GANfolk default
    python bench/clip_batching.py --tiny               # a tiny config, seconds on CPU
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfolk.runtime.images import decode_image  # noqa: E402
from ganfolk.runtime.storage import LocalStore  # noqa: E402
from ganfolk.v1 import clip_pb2, clip_pb2_grpc, common_pb2  # noqa: E402
from services.clip.config import ClipSettings  # noqa: E402
from services.clip.core import ClipCore, Prompt, load_core  # noqa: E402
from services.clip.main import SERVICE  # noqa: E402
from tests.fixtures.services import serving  # noqa: E402

TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}
PROMPT = "charcoal sketch of an inquisitive Turkish boy"


def noise_png(seed: int, size: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f} images/s"


async def bench_in_process(core: ClipCore, n: int) -> None:
    images = [decode_image(noise_png(i, 128), 10**8) for i in range(n)]
    pixels = core.preprocess(images)
    for k in (1, 2, 1):  # warm-up, the shapes measured below
        core.encode_pixels(pixels[:k])
    t = time.perf_counter()
    for i in range(n):
        core.encode_pixels(pixels[i : i + 1])
    sequential = time.perf_counter() - t
    assert core.image_batcher is not None
    calls = core.image_batcher.forward_calls
    t = time.perf_counter()
    await asyncio.gather(*(core.aembed_pixels(pixels[i : i + 1]) for i in range(n)))
    batched = time.perf_counter() - t
    passes = core.image_batcher.forward_calls - calls
    print(f"in-process, {n} single-image requests:")
    print(f"  sequential (1 image/pass)      {rate(n, sequential)}")
    print(f"  dynamic batching ({passes:3d} passes) {rate(n, batched)}   ratio {sequential / batched:5.2f}x")


async def concurrent_singles(stub: Any, refs: list[common_pb2.ImageRef], callers: int) -> float:
    queue = list(refs)

    async def caller() -> None:
        while queue:
            ref = queue.pop()
            await stub.Rank(
                clip_pb2.RankRequest(prompts=[common_pb2.WeightedPrompt(text=PROMPT)], images=[ref])
            )

    t = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return time.perf_counter() - t


async def bench_grpc(env: dict[str, Any], store_dir: Path, n_rank: int, n_single: int, callers: int) -> None:
    store = LocalStore(store_dir, fsync=False)
    keys = [f"bench/img-{i:04d}.png" for i in range(max(n_rank, n_single))]
    blobs = {k: noise_png(i, 128) for i, k in enumerate(keys)}
    for k, data in blobs.items():
        store.put(k, data, content_type="image/png")
    refs = [common_pb2.ImageRef(uri=store.uri(k)) for k in keys]

    results: dict[bool, float] = {}
    for dynamic in (False, True):
        overrides = {**env, "clip_dynamic_batching": dynamic}
        async with serving(SERVICE, worker_enabled=False, store_url=str(store_dir), **overrides) as (
            _,
            channel,
        ):
            stub = clip_pb2_grpc.ClipServiceStub(channel)
            await concurrent_singles(stub, refs[:4], callers)  # warm-up
            results[dynamic] = await concurrent_singles(stub, refs[:n_single], callers)
    off, on = results[False], results[True]
    print(f"gRPC, {callers} concurrent callers x single-image Rank, {n_single} images:")
    print(f"  unbatched                      {rate(n_single, off)}")
    print(f"  dynamic batching               {rate(n_single, on)}   ratio {off / on:5.2f}x")

    settings = ClipSettings(**env)
    async with serving(SERVICE, worker_enabled=False, store_url=str(store_dir), **env) as (running, channel):
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        core: ClipCore = running.holder.get()
        request = clip_pb2.RankRequest(prompts=[common_pb2.WeightedPrompt(text=PROMPT)], images=refs[:n_rank])
        await stub.Rank(clip_pb2.RankRequest(prompts=request.prompts, images=refs[:4]))  # warm-up
        t = time.perf_counter()
        reply = await stub.Rank(request)
        over_grpc = time.perf_counter() - t
        assert reply.total == n_rank

        def in_process() -> torch.Tensor:
            images = [decode_image(store.get(k), settings.max_image_pixels) for k in keys[:n_rank]]
            return core.rank([Prompt(PROMPT)], images)

        t = time.perf_counter()
        scores = await asyncio.to_thread(in_process)
        local = time.perf_counter() - t
    best = max(range(n_rank), key=lambda i: float(scores[i]))
    assert reply.ranked[0].index == best, "gRPC and in-process rankings differ"
    print(f"Rank over {n_rank} images, batch size {settings.clip_image_batch_size}:")
    print(f"  in-process                     {rate(n_rank, local)}")
    ratio = local / over_grpc
    print(
        f"  over gRPC                      {rate(n_rank, over_grpc)}   ratio {ratio:5.2f} (gRPC/in-process)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny random config instead of ViT-B-32")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--checkpoint", help="weights file or URI (default: random weights)")
    parser.add_argument("--images", type=int, default=256, help="images in the Rank comparison")
    parser.add_argument("--singles", type=int, default=64, help="single-image requests per batching run")
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="clip-bench-"))
    env: dict[str, Any] = {
        "clip_model": args.model,
        "clip_checkpoint": args.checkpoint,
        "allow_random_weights": args.checkpoint is None,
        "clip_max_batch": args.max_batch,
        "clip_max_wait_ms": args.max_wait_ms,
        "clip_image_batch_size": args.max_batch,
        "clip_max_images": max(args.images, args.singles),
        "state_dir": str(tmp / "state"),
    }
    if args.tiny:
        config = tmp / "bench-tiny-clip.json"
        config.write_text(json.dumps(TINY))
        env.update(clip_model="bench-tiny-clip", clip_model_config=str(config))
    torch.manual_seed(0)
    core = load_core(ClipSettings(**env))
    print(
        f"model {env['clip_model']} on {core.device} "
        f"({'random' if core.random_weights else 'checkpoint'} weights), "
        f"{core.image_size[0]} px, torch threads {torch.get_num_threads()}"
    )
    await bench_in_process(core, args.singles)
    await core.aclose()
    del core
    await bench_grpc(env, tmp / "objects", args.images, args.singles, args.callers)


if __name__ == "__main__":
    asyncio.run(main())
