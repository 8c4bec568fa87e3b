"""A portrait job through every service, on real NATS, a real store, a real chain."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.json_format import MessageToDict

from ganfolk.runtime.images import decode_array
from ganfolk.runtime.storage import open_store
from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc
from services.text.local_llm import LocalLLM
from tests.e2e.stack import Models, in_process, job_spec, tiny_models
from tests.fixtures.nats import free_port
from tests.fixtures.s3 import unique_bucket_name
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


@pytest.fixture(scope="session")
def local_llm() -> Iterator[LocalLLM]:
    """The offline LLM path ``ganfolk up`` uses: SmolLM2-135M served by llama.cpp on loopback."""
    llm = LocalLLM(free_port(), threads=2, parallel=2)
    llm.start()
    yield llm
    llm.stop()


@dataclass(frozen=True)
class Variant:
    store: str  # "local": a folder; "s3": a bucket on the S3 API server (moto, MinIO's stand-in)
    llm: bool  # the text service asks the real local LLM instead of its template writer
    # A second job with the same spec: same image, its own token (checked once, on the folder).
    repeat: bool = False


VARIANTS = [Variant("local", llm=False, repeat=True), Variant("s3", llm=False), Variant("local", llm=True)]


@pytest.mark.parametrize("variant", VARIANTS, ids=["local-store", "s3-store", "local-llm"])
async def test_portrait_job_through_every_service(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    models: Models,
    nats_server: Any,
    anvil: Any,  # noqa: F811
    tmp_path: Path,
    variant: Variant,
) -> None:
    store_dir = tmp_path / "objects"
    store_url = str(store_dir)
    if variant.store == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = unique_bucket_name("e2e")
        store_url = f"s3://{s3.access_key}:{s3.secret_key}@{bucket}?endpoint={s3.endpoint}&secure=false"
    llm_url = request.getfixturevalue("local_llm").base_url if variant.llm else None
    async with in_process(
        monkeypatch, models, nats_server.url, store_dir, anvil.url, llm_url=llm_url, store_url=store_url
    ) as stub:
        assert stub is not None
        job, updates = await run_job(stub, job_spec(), timeout=600 if variant.llm else 240)
        assert job.state == S.JOB_STATE_SUCCEEDED, job.error
        again = (await run_job(stub, job_spec()))[0] if variant.repeat else None
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
    store = open_store(store_url)
    assert job.final_image.uri.startswith("s3://" if variant.store == "s3" else "file://")
    final = decode_array(store.get_uri(job.final_image.uri, job.final_image.sha256), 10**7)
    assert final.shape == (128, 128, 3)  # 32 px refined -> 4x
    assert job.first_name and job.last_name and job.backstory
    assert job.token.token_id and job.token.recipient.lower() == job.spec.recipient.lower()
    services = {p.service for p in job.provenance}
    assert {"stylegan", "clip", "vqgan", "upscale", "text", "mint"} <= services
    assert not any(m.random_weights for p in job.provenance for m in p.models)
    text = [p for p in job.provenance if p.service == "text"]
    assert len(text) == 2  # the name and the backstory
    for p in text:
        asked = MessageToDict(p.parameters)["llm_calls"]
        if variant.llm:
            # The LLM was asked (its answers may still be refused and the template used).
            assert asked >= 1 and [m.name for m in p.models] == ["smollm2-135m-instruct"], p
        else:
            assert asked == 0 and "template-writer (no LLM endpoint configured)" in p.fallbacks, p
    assert updates[-1].job.state == S.JOB_STATE_SUCCEEDED
    assert any(u.event.stage == S.STAGE_REFINE for u in updates)
    if again is not None:
        # Same spec, same seed, same weights -> the same image on CPU.
        again_final = decode_array(store.get_uri(again.final_image.uri, again.final_image.sha256), 10**7)
        assert np.array_equal(final, again_final)
        assert again.token.token_id != job.token.token_id  # a new job mints its own token
    store.close()


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
