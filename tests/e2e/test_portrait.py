"""A portrait job through every service, on real NATS, a real store, a real chain."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ganfolk.runtime.images import decode_array
from ganfolk.runtime.storage import open_store
from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc
from tests.e2e.stack import Models, in_process, job_spec, tiny_models
from tests.mint.fixtures import anvil  # noqa: F401  (session fixture)

S = jobs_pb2


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return tiny_models(tmp_path_factory.mktemp("e2e-models"))


async def run_job(
    stub: jobs_pb2_grpc.JobServiceStub, spec: jobs_pb2.JobSpec, timeout: float = 240
) -> tuple[jobs_pb2.Job, list[jobs_pb2.WatchResponse]]:
    job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec))).job.job_id
    updates: list[jobs_pb2.WatchResponse] = []

    async def watch() -> None:
        async for update in stub.Watch(jobs_pb2.WatchRequest(job_id=job_id)):
            updates.append(update)

    await asyncio.wait_for(watch(), timeout)
    return (await stub.Get(jobs_pb2.GetRequest(job_id=job_id))).job, updates


async def test_portrait_job_through_every_service(
    monkeypatch: pytest.MonkeyPatch,
    models: Models,
    nats_server: Any,
    anvil: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "objects"
    async with in_process(monkeypatch, models, nats_server.url, store_dir, anvil.url) as stub:
        assert stub is not None
        job, updates = await run_job(stub, job_spec())
        assert job.state == S.JOB_STATE_SUCCEEDED, job.error
        again, _ = await run_job(stub, job_spec())
    stages = {S.Stage.Name(s.stage): s for s in job.stages}
    assert set(stages) == {
        "STAGE_SAMPLE",
        "STAGE_RANK",
        "STAGE_REFINE",
        "STAGE_FINISH",
        "STAGE_NAME",
        "STAGE_BACKSTORY",
        "STAGE_MINT",
    }
    assert all(s.state == S.JOB_STATE_SUCCEEDED and not s.skipped for s in stages.values())
    assert stages["STAGE_SAMPLE"].tasks_total == 2 and stages["STAGE_SAMPLE"].images_total == 8
    assert len(stages["STAGE_RANK"].images) == 3
    store = open_store(store_dir)
    final = decode_array(store.get_uri(job.final_image.uri, job.final_image.sha256), 10**7)
    assert final.shape == (128, 128, 3)  # 32 px refined -> 4x
    assert job.first_name and job.last_name and job.backstory
    assert job.token.token_id and job.token.recipient.lower() == job.spec.recipient.lower()
    services = {p.service for p in job.provenance}
    assert {"stylegan", "clip", "vqgan", "upscale", "text", "mint"} <= services
    assert not any(m.random_weights for p in job.provenance for m in p.models)
    assert updates[-1].job.state == S.JOB_STATE_SUCCEEDED
    assert any(u.event.stage == S.STAGE_REFINE for u in updates)
    # Same spec, same seed, same weights -> the same image on CPU.
    again_final = decode_array(store.get_uri(again.final_image.uri, again.final_image.sha256), 10**7)
    assert np.array_equal(final, again_final)
    assert again.token.token_id != job.token.token_id  # a new job mints its own token


async def test_collection_of_portraits(
    monkeypatch: pytest.MonkeyPatch,
    models: Models,
    nats_server: Any,
    anvil: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with in_process(monkeypatch, models, nats_server.url, tmp_path / "objects", anvil.url) as stub:
        assert stub is not None
        spec = job_spec(prompt="", collection_size=2, num_samples=4, mint=False, no_review=True)
        parent, _ = await run_job(stub, spec)
        assert parent.state == S.JOB_STATE_SUCCEEDED and len(parent.children) == 2
        children = []
        for child_id in parent.children:
            async for update in stub.Watch(jobs_pb2.WatchRequest(job_id=child_id)):
                last = update.job
            children.append(last)
    assert all(c.state == S.JOB_STATE_SUCCEEDED for c in children), [c.error for c in children]
    assert all(c.parent_id == parent.job_id for c in children)
    assert len({c.prompt for c in children}) == 2  # balanced: two different people
    assert all(c.first_name and c.final_image.uri for c in children)
