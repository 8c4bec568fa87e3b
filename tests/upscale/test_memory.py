"""Resident memory of the finishing service across repeated jobs, measured in the serving process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.images import encode_png
from ganfolk.runtime.metrics import process_memory
from ganfolk.v1 import common_pb2, upscale_pb2, upscale_pb2_grpc
from services.upscale.main import SERVICE
from tests.fixtures.services import serving

from .test_rrdbnet import CKPT

MiB = 1 << 20


async def test_rss_levels_off_across_repeated_rrdbnet_jobs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ten jobs through the real RRDBNet path: the 10th leaves RSS within a margin of the 3rd.

    Each job allocates tile-sized feature maps (the 8-channel golden model at 128 px tiles:
    ~2-8 MiB each, in the range glibc serves from per-thread arenas) on whichever worker
    thread runs it; kept rather than handed back, they added up job after job.
    """
    monkeypatch.setenv("GANFOLK_UPSCALE_CHECKPOINT", str(CKPT))
    monkeypatch.setenv("GANFOLK_UPSCALE_CHECKPOINT_SHA256", file_sha256(Path(CKPT)))
    monkeypatch.setenv("GANFOLK_UPSCALE_TILE", "128")
    rng = np.random.default_rng(0)
    image = common_pb2.ImageRef(inline_data=encode_png(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)))
    rss: list[int] = []
    async with serving(SERVICE, store_url=str(tmp_path / "objects"), worker_enabled=False) as (_, channel):
        stub = upscale_pb2_grpc.UpscaleServiceStub(channel)
        for i in range(10):
            reply = await stub.Finish(
                upscale_pb2.FinishRequest(
                    image=image,
                    params={"backend": upscale_pb2.SUPER_RESOLUTION_BACKEND_TORCH_RRDBNET, "noise_seed": i},
                    output_prefix=f"out/{i}",
                ),
                timeout=120,
            )
            assert (reply.image.width, reply.image.height) == (1024, 1024)
            rss.append(process_memory()["rss"])
    print("RSS after each job (MiB):", [round(r / MiB) for r in rss])
    assert rss[9] - rss[2] < 64 * MiB, [round(r / MiB) for r in rss]
