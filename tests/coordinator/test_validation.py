"""The jobs API refuses what could never succeed, up front, on the real coordinator and NATS:
INVALID_ARGUMENT with a message that says what to fix, no job created, no task published."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ganfolk.runtime import jetstream, limits
from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc, text_pb2
from services.coordinator.main import SERVICE as COORDINATOR
from tests.fixtures.services import serving

S = jobs_pb2
UNKNOWN_JOB = "job-" + "0" * 24


def spec(**kw: Any) -> jobs_pb2.JobSpec:
    base: dict[str, Any] = {"prompt": "charcoal sketch of a shy Turkish boy", "name_and_backstory": False}
    return jobs_pb2.JobSpec(**{**base, **kw})


# (what is wrong, the request, words of the message)
BAD_SUBMITS: list[tuple[str, jobs_pb2.SubmitRequest, str]] = [
    ("TAB in prompt", S.SubmitRequest(spec=spec(prompt="oil\tportrait")), "prompt contains"),
    ("NUL in prompt", S.SubmitRequest(spec=spec(prompt="oil\x00portrait")), "'\\x00'"),
    ("long prompt", S.SubmitRequest(spec=spec(prompt="p" * 501)), "prompt is 501 characters; keep it to 500"),
    ("blank prompt", S.SubmitRequest(spec=spec(prompt="  ")), "prompt is only whitespace"),
    (
        "long description",
        S.SubmitRequest(spec=spec(description="d" * 501)),
        "description is 501 characters; keep it to 500",
    ),
    ("newline in description", S.SubmitRequest(spec=spec(description="a\nb")), "description contains"),
    (
        "task over the sampler's limit",
        S.SubmitRequest(spec=spec(num_samples=2000, sample_task_size=1001)),
        "sample_task_size 1001 is over the limit of 1000",
    ),
    (
        "too many samples",
        S.SubmitRequest(spec=spec(num_samples=20_000)),
        "num_samples 20000 is over the limit of 10000",
    ),
    ("negative seed", S.SubmitRequest(spec=spec(seed=-1)), "seed must be >= 0"),
    (
        "seeds past int64",
        S.SubmitRequest(spec=spec(seed=2**63 - 5, num_samples=10)),
        "runs past 2**63 - 1 (the largest int64 seed): use a seed of at most 9223372036854775798",
    ),
    ("top_k over samples", S.SubmitRequest(spec=spec(num_samples=4, top_k=5)), "top_k 5 is larger"),
    (
        "unknown latent distribution",
        S.SubmitRequest(spec=spec(latent_distribution=7)),  # type: ignore[arg-type]
        "latent_distribution 7 is not one of",
    ),
    (
        "description on a collection",
        S.SubmitRequest(spec=spec(prompt="", collection_size=2, description="a girl")),
        "a collection writes its own descriptions: leave description empty",
    ),
    (
        "filter without a collection",
        S.SubmitRequest(spec=spec(collection_filter=text_pb2.CollectionFilter(genders=["female"]))),
        "set collection_size too",
    ),
    (
        "both review options",
        S.SubmitRequest(spec=spec(require_review=True, no_review=True)),
        "require_review and no_review contradict",
    ),
    ("bad recipient", S.SubmitRequest(spec=spec(mint=True, recipient="0x12")), "not a 0x-prefixed"),
    ("NUL in key", S.SubmitRequest(spec=spec(), idempotency_key="k\x00"), "idempotency_key contains"),
    (
        "long key",
        S.SubmitRequest(spec=spec(), idempotency_key="k" * 257),
        "idempotency_key is 257 characters",
    ),
]


async def job_ids(nc: NATS) -> set[str]:
    keys = await jetstream.kv_values(await jetstream.ensure_kv(nc.jetstream()))
    return {key for key in keys if not key.startswith("index.")}  # the coordinator's job index


@pytest_asyncio.fixture
async def stub(nats_server: Any, tmp_path: Path) -> AsyncIterator[jobs_pb2_grpc.JobServiceStub]:
    async with serving(COORDINATOR, nats_url=nats_server.url, store_url=str(tmp_path / "objects")) as (_, ch):
        yield jobs_pb2_grpc.JobServiceStub(ch)


async def invalid(call: Any) -> str:
    """The details of the INVALID_ARGUMENT ``call`` (a unary call or a stream) must end in."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    return err.value.details() or ""


async def test_bad_submits_create_no_job_and_publish_no_task(
    stub: jobs_pb2_grpc.JobServiceStub, nc: NATS
) -> None:
    tasks: list[Msg] = []

    async def seen(msg: Msg) -> None:
        tasks.append(msg)

    await nc.subscribe(jetstream.task_subject(">"), cb=seen)
    before = await job_ids(nc)
    for what, request, message in BAD_SUBMITS:
        assert message in await invalid(stub.Submit(request)), what
    await nc.flush()
    assert await job_ids(nc) == before
    assert tasks == []

    # The same subscription sees a good job's tasks; num_samples 0 is the documented default.
    job = (await stub.Submit(S.SubmitRequest(spec=spec(num_samples=0, sample_task_size=500)))).job
    sample = next(s for s in job.stages if s.stage == S.STAGE_SAMPLE)
    assert sample.tasks_total == 2  # 1,000 samples in tasks of 500
    for _ in range(100):
        if len(tasks) >= 2:
            break
        await asyncio.sleep(0.05)
    assert sorted(m.subject for m in tasks) == [jetstream.task_subject("sample")] * 2
    assert await job_ids(nc) == before | {job.job_id}


@pytest.mark.parametrize("job_id", [">", "*", "job 1", "job-1.>", UNKNOWN_JOB.upper(), "", "x" * 300])
async def test_job_ids_are_checked_before_nats(stub: jobs_pb2_grpc.JobServiceStub, job_id: str) -> None:
    expected = "job_id is required" if not job_id else "is not a job id: 'job-' and 24 lower-case hex digits"
    for call in (
        stub.Get(S.GetRequest(job_id=job_id)),
        stub.Watch(S.WatchRequest(job_id=job_id)),
        stub.Cancel(S.CancelRequest(job_id=job_id)),
        stub.Review(S.ReviewRequest(job_id=job_id, decision=S.REVIEW_DECISION_APPROVE)),
        stub.GetOutputs(S.GetOutputsRequest(job_id=job_id)),
    ):
        assert expected in await invalid(call)


async def test_well_formed_unknown_job_is_not_found(stub: jobs_pb2_grpc.JobServiceStub) -> None:
    assert limits.JOB_ID.fullmatch(UNKNOWN_JOB)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Get(S.GetRequest(job_id=UNKNOWN_JOB))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_refuses_tokens_it_never_returned(stub: jobs_pb2_grpc.JobServiceStub) -> None:
    for token in ("-1", "abc", "1e3", " 5", "9" * 40):
        assert "is not one returned by List" in await invalid(stub.List(S.ListRequest(page_token=token)))
    assert "is not a JobState" in await invalid(stub.List(S.ListRequest(state=42)))  # type: ignore[arg-type]
    assert (await stub.List(S.ListRequest(page_token="0"))) is not None
