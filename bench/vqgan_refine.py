"""VQGAN+CLIP refinement speed: iterations per second of the real loop (not a timed test).

1. The golden tiny VQGAN (f2, 32 px) + a tiny random CLIP on CPU, at a few cutn values.
2. The public f16 VQGAN architecture (taming ``vqgan_imagenet_f16`` with 1,024 codes, the GANfolk
   model) + CLIP ViT-B-32, random weights (speed, not quality): 256 px on CPU when ``--f16`` is
   given (seconds per iteration); 256 and 512 px with the notebook's cutn 64 on CUDA when a GPU
   is visible.

Every figure comes from ``services.vqgan.core.VQGANCore.refine`` with the notebook augmentations,
after one warm-up iteration.

    python bench/vqgan_refine.py            # tiny config, seconds
    python bench/vqgan_refine.py --f16      # + the public f16 config at 256 px on CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfolk.runtime.models import model_ref  # noqa: E402
from services.clip.loader import load_clip  # noqa: E402
from services.vqgan.core import VQGANCore  # noqa: E402
from services.vqgan.model import VQGANConfig, build_vqgan, load_vqgan  # noqa: E402
from services.vqgan.refine import Prompt, RefineParams  # noqa: E402

GOLDEN = ROOT / "tests" / "data" / "golden"
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# taming's custom_vqgan.yaml / vqgan_imagenet_f16 architecture with the GANfolk codebook size.
F16 = VQGANConfig(
    embed_dim=256,
    n_embed=1024,
    ch=128,
    ch_mult=(1, 1, 2, 2, 4),
    num_res_blocks=2,
    attn_resolutions=(16,),
    resolution=256,
    z_channels=256,
)
PROMPTS = [Prompt("charcoal sketch of an inquisitive Turkish boy")]


def init_image(size: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size))


def its(core: VQGANCore, size: int, cutn: int, iterations: int) -> float:
    img = init_image(size)
    core.refine(img, PROMPTS, RefineParams(size=size, cutn=cutn, iterations=1))  # warm-up
    if core.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    core.refine(img, PROMPTS, RefineParams(size=size, cutn=cutn, iterations=iterations))
    if core.device.startswith("cuda"):
        torch.cuda.synchronize()
    return iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--f16", action="store_true", help="also the public f16 config at 256 px on CPU")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy host)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: list[dict[str, object]] = []

    def report(name: str, device: str, size: int, cutn: int, rate: float) -> None:
        row = {"config": name, "device": device, "size": size, "cutn": cutn, "it_per_s": round(rate, 3)}
        results.append(row)
        print(f"{name:<28} {device:<6} {size:>4} px  cutn {cutn:>3}  {rate:8.3f} it/s  ({1 / rate:.3f} s/it)")

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench-tiny-clip.json"
        cfg.write_text(json.dumps(TINY_CLIP))
        torch.manual_seed(0)
        clip = load_clip("bench-tiny-clip", None, allow_random=True, model_config=cfg)
    vq = load_vqgan(GOLDEN / "vqgan_tiny.ckpt", GOLDEN / "vqgan_tiny.yaml")
    core = VQGANCore(vq, clip, "cpu", model_ref("vqgan-taming"), 8 << 30)
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), notebook augmentations on")
    for cutn in (8, 32, 64):
        report("tiny f2 + tiny CLIP", "cpu", 32, cutn, its(core, 32, cutn, args.iterations))

    devices = (["cpu"] if args.f16 else []) + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        torch.manual_seed(0)
        big = build_vqgan(F16).to(device).eval().requires_grad_(False)
        vit = load_clip("ViT-B-32", None, device=device, allow_random=True)
        core = VQGANCore(big, vit, device, model_ref("vqgan-taming", random_weights=True), 64 << 30)
        if device == "cpu":
            report(
                "f16 (1024 codes) + ViT-B-32",
                device,
                256,
                8,
                its(core, 256, 8, max(2, args.iterations // 10)),
            )
        else:
            for size in (256, 512):
                report("f16 (1024 codes) + ViT-B-32", device, size, 64, its(core, size, 64, args.iterations))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
