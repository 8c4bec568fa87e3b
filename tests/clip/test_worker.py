"""The ``rank`` stage through a real nats-server, on images in the object store."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
import torch
from nats.aio.client import Client as NATS

from ganfolk.runtime import jetstream
from ganfolk.runtime.images import encode_png
from ganfolk.runtime.storage import LocalStore
from ganfolk.v1 import clip_pb2, common_pb2, events_pb2
from services.clip import ops
from services.clip.core import ClipCore
from services.clip.main import SERVICE
from tests.clip.conftest import Tiny
from tests.fixtures.nats import NatsServer
from tests.fixtures.services import serving

N_IMAGES = 1000
CHUNK = 50


def rank_task(job: str, **fields: Any) -> tuple[str, bytes]:
    task_id = f"task-{uuid.uuid4().hex[:8]}"
    meta = common_pb2.TaskMeta(job_id=job, task_id=task_id, stage="rank")
    return task_id, clip_pb2.RankRequest(meta=meta, **fields).SerializeToString()


async def outcome(sub: Any, timeout: float = 60) -> events_pb2.StageEvent:
    while True:
        event = events_pb2.StageEvent.FromString((await sub.next_msg(timeout=timeout)).data)
        if event.WhichOneof("outcome") != "progress":
            return event


async def test_rank_stage_scores_1000_stored_images_in_bounded_chunks(
    tiny: Tiny, nats_server: NatsServer, nc: NATS, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path, fsync=False)  # test set-up speed only
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (N_IMAGES, 24, 24, 3), dtype=np.uint8)
    for i in range(N_IMAGES):
        store.put(f"job-r/samples/seed-{i:04d}.png", encode_png(pixels[i]), content_type="image/png")

    # Count images decoded and not yet through the model: bounded by the chunking, not by N_IMAGES.
    live = {"now": 0, "peak": 0, "loaded": 0}
    load_one = ops._load_one

    def counting_load(*args: Any) -> Any:
        out = load_one(*args)
        live["now"] += 1
        live["loaded"] += 1
        live["peak"] = max(live["peak"], live["now"])
        return out

    monkeypatch.setattr(ops, "_load_one", counting_load)
    env = tiny.env(clip_rank_chunk=CHUNK, clip_max_batch=CHUNK)
    async with serving(
        SERVICE, store_url=str(tmp_path), nats_url=nats_server.url, worker_enabled=True, **env
    ) as (running, _):
        core: ClipCore = running.holder.get()
        embed = core.aembed_pixels
        rows_per_pass: list[int] = []

        async def counting_embed(p: torch.Tensor) -> torch.Tensor:
            rows_per_pass.append(len(p))
            out = await embed(p)
            live["now"] -= len(p)
            return out

        monkeypatch.setattr(core, "aembed_pixels", counting_embed)

        job = f"job-{uuid.uuid4().hex[:8]}"
        events = await nc.subscribe(jetstream.event_subject(job))
        prompts = [common_pb2.WeightedPrompt(text="a thoughtful Brazilian girl")]
        task_id, payload = rank_task(job, prompts=prompts, image_prefix="job-r/samples", top_k=10)
        await jetstream.publish_task(nc.jetstream(), "rank", payload, task_id)
        event = await outcome(events)
        assert event.WhichOneof("outcome") == "result", event
        result = event.result.rank
        assert result.total == N_IMAGES and len(result.ranked) == 10
        assert [r.score for r in result.ranked] == sorted((r.score for r in result.ranked), reverse=True)
        assert live["loaded"] == N_IMAGES
        assert max(rows_per_pass) <= CHUNK and sum(rows_per_pass) == N_IMAGES
        assert live["peak"] <= 2 * CHUNK  # the chunk being embedded + the next one being read

        # The scores are those of the in-process core on the same pixels.
        best = result.ranked[0]
        assert best.image.uri == store.uri(f"job-r/samples/seed-{best.index:04d}.png")
        from PIL import Image

        expected = core.rank(
            [ops.Prompt("a thoughtful Brazilian girl")], [Image.fromarray(pixels[best.index])]
        )
        assert best.score == pytest.approx(float(expected[0]), abs=1e-5)

        # Bad input is terminated at once with a message, not retried.
        task_id, payload = rank_task(job, image_prefix="job-r/samples")
        await jetstream.publish_task(nc.jetstream(), "rank", payload, task_id)
        failure = await outcome(events)
        assert failure.failure.code == "INVALID_ARGUMENT" and not failure.failure.retryable
        assert "no prompts" in failure.failure.message
        await events.unsubscribe()
