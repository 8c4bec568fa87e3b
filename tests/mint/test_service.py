"""The minting service over real gRPC and a real nats-server, on a real anvil."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from eth_account import Account
from nats.aio.client import Client as NATS

from ganfolk.runtime import jetstream
from ganfolk.runtime.images import store_image_sync
from ganfolk.runtime.storage import LocalStore
from ganfolk.v1 import common_pb2, events_pb2, mint_pb2, mint_pb2_grpc
from services.mint.anvil import Anvil
from services.mint.chain import Chain
from services.mint.config import MintSettings
from services.mint.core import load_artifact
from services.mint.main import SERVICE
from tests.fixtures.services import serving
from tests.mint.fixtures import *  # noqa: F403
from tests.mint.fixtures import DEV_KEY, SECOND_ACCOUNT


def service_env(chain: Anvil, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "store_url": str(tmp_path / "objects"),
        "state_dir": str(tmp_path / "state"),
        "worker_enabled": False,
        "mint_rpc_url": chain.url,
        "mint_chain_id": chain.chain_id,
        "mint_private_key": DEV_KEY,
        "mint_receipt_timeout_s": 20.0,
    }
    env.update(extra)
    return env


def mint_request(image: common_pb2.ImageRef, key: str, **kw: Any) -> mint_pb2.MintRequest:
    return mint_pb2.MintRequest(
        idempotency_key=key,
        title="oil portrait of a thoughtful Brazilian girl: Sophia Santos",
        description="Sophia Santos collects maps of cities she has never visited.",
        image=image,
        attributes=[mint_pb2.Attribute(trait_type="nationality", value="Brazilian")],
        **kw,
    )


async def test_mint_and_get_token_over_grpc(anvil: Anvil, tmp_path: Path, image, caplog) -> None:
    caplog.set_level("DEBUG")
    async with serving(SERVICE, **service_env(anvil, tmp_path)) as (_, channel):
        stub = mint_pb2_grpc.MintServiceStub(channel)
        minted = await stub.Mint(mint_request(image, "job-grpc", recipient=SECOND_ACCOUNT))
        assert minted.token_id == "1" and not minted.already_minted
        assert minted.recipient == SECOND_ACCOUNT and minted.chain_id == 31337
        assert minted.transaction_hash.startswith("0x") and minted.token_uri.endswith(".json")
        assert minted.provenance.service == "mint"

        again = await stub.Mint(mint_request(image, "job-grpc"))
        assert again.already_minted and again.token_id == "1"
        assert again.transaction_hash == minted.transaction_hash

        by_id = await stub.GetToken(mint_pb2.GetTokenRequest(token_id="1"))
        by_key = await stub.GetToken(mint_pb2.GetTokenRequest(idempotency_key="job-grpc"))
        assert by_id == by_key
        assert by_id.owner == SECOND_ACCOUNT and by_id.token_uri == minted.token_uri
        assert by_id.name.endswith("Sophia Santos") and "maps" in by_id.description
        assert by_id.image.endswith(".png")
        assert [(a.trait_type, a.value) for a in by_id.attributes] == [("nationality", "Brazilian")]

        # Five at once through the server: five tokens, no nonce errors.
        replies = await asyncio.gather(*(stub.Mint(mint_request(image, f"job-g{i}")) for i in range(5)))
        assert sorted(int(r.token_id) for r in replies) == [2, 3, 4, 5, 6]

        cases = [
            (stub.Mint(mint_request(image, "job-x", recipient="0xdead")), "INVALID_ARGUMENT", "0x address"),
            (stub.Mint(mint_request(image, "")), "INVALID_ARGUMENT", "idempotency_key is required"),
            (stub.GetToken(mint_pb2.GetTokenRequest(token_id="77")), "NOT_FOUND", "does not exist"),
            (stub.GetToken(mint_pb2.GetTokenRequest(token_id="-1")), "INVALID_ARGUMENT", "decimal uint256"),
            (
                stub.GetToken(mint_pb2.GetTokenRequest()),
                "INVALID_ARGUMENT",
                "set token_id or idempotency_key",
            ),
        ]
        for call, code, message in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code().name == code and message in (err.value.details() or "")
    assert DEV_KEY.removeprefix("0x") not in caplog.text


async def test_grpc_errors_for_funds_and_an_unreachable_chain(
    anvil: Anvil, fresh_anvil: Anvil, tmp_path: Path, image
) -> None:
    # An unfunded account that is allowed to mint: FAILED_PRECONDITION naming the account.
    poor = Account.create()
    async with serving(SERVICE, **service_env(anvil, tmp_path / "owner")) as (_, channel):
        owner = (
            await mint_pb2_grpc.MintServiceStub(channel).Mint(mint_request(image, "job-owner"))
        ).contract_address
    chain = Chain(MintSettings(mint_rpc_url=anvil.url, mint_private_key=DEV_KEY))
    contract = chain.w3.eth.contract(address=owner, abi=load_artifact()["abi"])
    chain.wait_receipt(chain.transact(contract.functions.setMinter(poor.address, True)).tx_hash)
    env = service_env(anvil, tmp_path / "poor", mint_private_key=poor.key.hex(), mint_contract_address=owner)
    async with serving(SERVICE, **env) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mint_pb2_grpc.MintServiceStub(channel).Mint(mint_request(image, "job-poor"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "insufficient funds" in (err.value.details() or "") and poor.address in (err.value.details() or "")
    assert poor.key.hex().removeprefix("0x") not in (err.value.details() or "")

    # The chain goes away under a running service: UNAVAILABLE, retryable.
    async with serving(SERVICE, **service_env(fresh_anvil, tmp_path / "gone", mint_rpc_timeout_s=2)) as (
        _,
        ch,
    ):
        fresh_anvil.stop()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mint_pb2_grpc.MintServiceStub(ch).Mint(mint_request(image, "job-gone"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "unreachable" in (err.value.details() or "")


async def test_mint_stage_over_nats(anvil: Anvil, nc: NATS, nats_server: Any, tmp_path: Path, image) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"
    events = await nc.subscribe(jetstream.event_subject(job))
    env = service_env(anvil, tmp_path, worker_enabled=True, nats_url=nats_server.url)
    store_dir = tmp_path / "objects"
    async with serving(SERVICE, **env):
        # On NATS images travel by reference: put the portrait in the store first.
        ref = store_image_sync(LocalStore(store_dir), f"{job}/final.png", np.full((8, 8, 3), 200, np.uint8))
        results = []
        for attempt in range(2):  # the coordinator re-sends the stage (new task id, same job)
            meta = common_pb2.TaskMeta(job_id=job, task_id=f"{job}.mint.{attempt}", stage="mint")
            task = mint_request(ref, "", meta=meta)  # no key: the job id is the key
            await jetstream.publish_task(nc.jetstream(), "mint", task.SerializeToString(), meta.task_id)
            event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=60)).data)
            while event.WhichOneof("outcome") == "progress":  # a running mint reports as it goes
                event = events_pb2.StageEvent.FromString((await events.next_msg(timeout=60)).data)
            assert event.WhichOneof("outcome") == "result", event
            results.append(event.result.mint)
    assert results[0].token_id == results[1].token_id
    assert not results[0].already_minted and results[1].already_minted
    assert results[0].transaction_hash == results[1].transaction_hash
