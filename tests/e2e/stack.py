"""Every GANfolk service with tiny real models, for end-to-end jobs.

Weights: the golden StyleGAN2, VQGAN and RRDBNet checkpoints, and a tiny random open_clip
saved to a checkpoint (so CLIP and VQGAN run with "real", non-random weights and the
coordinator does not skip them). Text runs its template writer (no LLM endpoint); mint
runs on anvil.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc, upscale_pb2, vqgan_pb2
from tests.fixtures import golden
from tests.fixtures.services import serving
from tests.fixtures.tiny_clip import save_tiny_clip

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = golden.GOLDEN
TINY_CLIP = "tiny-clip-e2e"
RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil's second dev account


@dataclass
class Models:
    env: dict[str, str]


def tiny_models(root: Path) -> Models:
    config, checkpoint, sha = save_tiny_clip(root, TINY_CLIP, 99)
    env = {
        "GANFOLK_STYLEGAN_CHECKPOINT": str(GOLDEN / "stylegan2_tiny.pt"),
        "GANFOLK_CLIP_MODEL": TINY_CLIP,
        "GANFOLK_CLIP_MODEL_CONFIG": str(config),
        "GANFOLK_CLIP_CHECKPOINT": str(checkpoint),
        "GANFOLK_CLIP_CHECKPOINT_SHA256": sha,
        "GANFOLK_VQGAN_CHECKPOINT": str(GOLDEN / "vqgan_tiny.ckpt"),
        "GANFOLK_VQGAN_CONFIG": str(GOLDEN / "vqgan_tiny.yaml"),
        "GANFOLK_VQGAN_CLIP_MODEL": TINY_CLIP,
        "GANFOLK_VQGAN_CLIP_MODEL_CONFIG": str(config),
        "GANFOLK_VQGAN_CLIP_CHECKPOINT": str(checkpoint),
        "GANFOLK_VQGAN_CLIP_SHA256": sha,
        "GANFOLK_VQGAN_DEFAULT_SIZE": "32",
        "GANFOLK_VQGAN_CPU_THREADS": "1",
        "GANFOLK_UPSCALE_CHECKPOINT": str(GOLDEN / "rrdbnet_tiny.pth"),
        "GANFOLK_DEVICE": "cpu",
        "GANFOLK_ALLOW_RANDOM_WEIGHTS": "0",
    }
    return Models(env)


def job_spec(**kw: Any) -> jobs_pb2.JobSpec:
    base: dict[str, Any] = {
        "prompt": "charcoal sketch of an inquisitive Turkish boy",
        "num_samples": 8,
        "sample_task_size": 4,
        "top_k": 3,
        "seed": 5,
        "refine": vqgan_pb2.RefineParams(size=32, iterations=3, cutn=4, seed=1, snapshot_every=1),
        "finish": upscale_pb2.FinishParams(noise_seed=1),
        "mint": True,
        "recipient": RECIPIENT,
    }
    return jobs_pb2.JobSpec(**{**base, **kw})


SERVICES = ("stylegan", "clip", "vqgan", "upscale", "text", "mint")


@contextlib.asynccontextmanager
async def in_process(
    monkeypatch: pytest.MonkeyPatch,
    models: Models,
    nats_url: str,
    store: Path,
    rpc_url: str,
    services: tuple[str, ...] = SERVICES,
    coordinator: bool = True,
    llm_url: str | None = None,
    **overrides: Any,
) -> AsyncIterator[jobs_pb2_grpc.JobServiceStub | None]:
    """Every service (and the coordinator) in this event loop, on random loopback ports.

    ``llm_url``: the text service asks this OpenAI-compatible endpoint (e.g. the local
    llama.cpp server); unset, its template writer answers. ``store_url=`` in ``overrides``
    puts the objects elsewhere than ``store`` (e.g. on an S3 API server).
    """
    from ganfolk.runtime.service import load_definition

    for key, value in models.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GANFOLK_MINT_RPC_URL", rpc_url)
    monkeypatch.setenv("GANFOLK_STATE_DIR", str(store.parent / "state"))
    if llm_url:
        monkeypatch.setenv("GANFOLK_TEXT_LLM_BASE_URL", llm_url)
        # A 135M model on a shared CPU answers slowly: one try per answer (an invalid one falls
        # back to the template writer; tests/text cover the re-asking) bounds the time.
        monkeypatch.setenv("GANFOLK_TEXT_LLM_TIMEOUT_SECONDS", "120")
        monkeypatch.setenv("GANFOLK_TEXT_MAX_ATTEMPTS", "1")
    else:
        monkeypatch.delenv("GANFOLK_TEXT_LLM_BASE_URL", raising=False)
    common = {"nats_url": nats_url, "store_url": str(store), **overrides}
    async with contextlib.AsyncExitStack() as stack:
        for name in services:
            await stack.enter_async_context(serving(load_definition(name), **common))
        if coordinator:
            _, channel = await stack.enter_async_context(
                serving(load_definition("coordinator"), coordinator_sweep_interval_s=0.5, **common)
            )
            yield jobs_pb2_grpc.JobServiceStub(channel)
        else:
            yield None


def service_process(
    name: str, models: Models, nats_url: str, store: Path, rpc_url: str, log: Path, **env: str
) -> subprocess.Popen[bytes]:
    """``ganfolk serve <name>`` as its own process (to kill -9 it)."""
    full = {
        **os.environ,
        **models.env,
        "GANFOLK_NATS_URL": nats_url,
        "GANFOLK_STORE_URL": str(store),
        "GANFOLK_GRPC_PORT": "0",
        "GANFOLK_MINT_RPC_URL": rpc_url,
        "GANFOLK_STATE_DIR": str(store.parent / "state"),
        "GANFOLK_COORDINATOR_SWEEP_INTERVAL_S": "0.5",
        **env,
    }
    full.pop("GANFOLK_TEXT_LLM_BASE_URL", None)
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "ganfolk.cli", "serve", name],
        cwd=ROOT,
        env=full,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


@contextlib.contextmanager
def processes(*procs: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()
