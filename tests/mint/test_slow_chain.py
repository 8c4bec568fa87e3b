"""A chain that stops mining for longer than the mint stage's timeout: the job waits, then mints once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ganfolk.runtime import jetstream
from ganfolk.runtime.service import load_definition
from ganfolk.v1 import info_pb2, jobs_pb2, jobs_pb2_grpc, upscale_pb2
from services.mint.anvil import Anvil
from services.mint.chain import forget_signers
from services.mint.config import MintSettings
from services.mint.core import load_minter
from tests.fixtures import golden
from tests.fixtures.nats import NatsServer
from tests.fixtures.services import serving
from tests.mint.fixtures import fresh_anvil  # noqa: F401  (fixture)

S = jobs_pb2
RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil's second dev account
# The old rule failed the stage this long after it started, however busy its worker was.
MINT_TIMEOUT_S = 3.0
RECEIPT_TIMEOUT_S = 1.0


@contextlib.asynccontextmanager
async def stack(
    monkeypatch: pytest.MonkeyPatch, own_nats: NatsServer, chain: Anvil, tmp_path: Path
) -> AsyncIterator[jobs_pb2_grpc.JobServiceStub]:
    """Sampler, finisher, minter and coordinator; rank and refine skipped (their services say
    they run on random weights), so the job reaches the mint in seconds."""
    monkeypatch.setenv("GANFOLK_STYLEGAN_CHECKPOINT", str(golden.path("stylegan2_tiny.pt")))
    monkeypatch.setenv("GANFOLK_UPSCALE_CHECKPOINT", str(golden.path("rrdbnet_tiny.pth")))
    monkeypatch.setenv("GANFOLK_DEVICE", "cpu")
    monkeypatch.setenv("GANFOLK_MINT_RPC_URL", chain.url)
    monkeypatch.setenv("GANFOLK_MINT_RECEIPT_TIMEOUT_S", str(RECEIPT_TIMEOUT_S))
    monkeypatch.setenv("GANFOLK_STATE_DIR", str(tmp_path / "state"))
    nc = await jetstream.connect(own_nats.url, "test")
    await jetstream.ensure_streams(nc.jetstream())
    for service, stage in (("clip", "rank"), ("vqgan", "refine")):
        info = info_pb2.GetInfoResponse(service=service, ready=True, random_weights=True, stages=[stage])
        await jetstream.publish_service_info(nc.jetstream(), service, info.SerializeToString())
    await nc.close()
    common = {"nats_url": own_nats.url, "store_url": str(tmp_path / "objects")}
    async with contextlib.AsyncExitStack() as services:
        for name in ("stylegan", "upscale", "mint"):
            await services.enter_async_context(serving(load_definition(name), **common))
        _, channel = await services.enter_async_context(
            serving(
                load_definition("coordinator"),
                **common,
                coordinator_timeout_mint_s=MINT_TIMEOUT_S,
                coordinator_sweep_interval_s=0.2,
            )
        )
        yield jobs_pb2_grpc.JobServiceStub(channel)
    forget_signers()


async def wait_for(
    stub: jobs_pb2_grpc.JobServiceStub, job_id: str, predicate: Any, timeout: float
) -> jobs_pb2.Job:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await stub.Get(jobs_pb2.GetRequest(job_id=job_id))).job
        if predicate(job) or job.state in (S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED):
            return job
        assert asyncio.get_running_loop().time() < deadline, f"job stuck: {job}"
        await asyncio.sleep(0.1)


def mint_running(job: jobs_pb2.Job) -> bool:
    return any(s.stage == S.STAGE_MINT and s.state == S.JOB_STATE_RUNNING for s in job.stages)


async def test_mining_paused_past_the_mint_timeout_job_waits_and_mints_once(
    monkeypatch: pytest.MonkeyPatch,
    own_nats: NatsServer,
    fresh_anvil: Anvil,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with stack(monkeypatch, own_nats, fresh_anvil, tmp_path) as stub:
        spec = jobs_pb2.JobSpec(
            prompt="charcoal sketch of an inquisitive Turkish boy",
            num_samples=2,
            sample_task_size=2,
            seed=3,
            name_and_backstory=False,
            finish=upscale_pb2.FinishParams(noise_seed=1),
            mint=True,
            recipient=RECIPIENT,
        )
        fresh_anvil.rpc("evm_setAutomine", [False])  # the contract is deployed: now nothing mines
        job_id = (await stub.Submit(jobs_pb2.SubmitRequest(spec=spec))).job.job_id
        job = await wait_for(stub, job_id, mint_running, 180)
        assert mint_running(job), job.error
        pending: dict[str, Any] = {}
        for _ in range(600):  # the mint task has broadcast its transaction
            pending = fresh_anvil.rpc("txpool_content")["pending"]
            if pending:
                break
            await asyncio.sleep(0.05)
        assert sum(len(v) for v in pending.values()) == 1
        paused_at = time.monotonic()
        await asyncio.sleep(3 * MINT_TIMEOUT_S)  # three old timeouts without a block
        job = (await stub.Get(jobs_pb2.GetRequest(job_id=job_id))).job
        assert job.state == S.JOB_STATE_RUNNING and mint_running(job), job.error
        assert sum(len(v) for v in fresh_anvil.rpc("txpool_content")["pending"].values()) == 1  # none re-sent
        fresh_anvil.rpc("evm_setAutomine", [True])
        fresh_anvil.rpc("evm_mine")
        paused_s = time.monotonic() - paused_at
        job = await wait_for(stub, job_id, lambda j: j.state == S.JOB_STATE_SUCCEEDED, 120)
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    print(
        f"mining paused {paused_s:.1f}s against a {MINT_TIMEOUT_S}s mint timeout; job minted token {job.token.token_id}"
    )
    assert job.token.token_id == "1" and job.token.transaction_hash
    assert job.token.recipient.lower() == RECIPIENT.lower()
    minter = load_minter(
        MintSettings(
            mint_rpc_url=fresh_anvil.url, state_dir=tmp_path / "state", store_url=str(tmp_path / "objects")
        )
    )
    assert minter.total_minted() == 1  # exactly one token for the job
    forget_signers()
