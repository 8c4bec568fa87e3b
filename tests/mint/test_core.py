"""Minting core on a real anvil: read-back, idempotency across crashes, nonces, errors, secrecy."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account import Account
from web3 import Web3

from ganfolk.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Transient
from ganfolk.runtime.settings import ConfigError
from services.mint.anvil import Anvil
from services.mint.chain import GWEI, Chain, ReceiptUnknown, Sent, forget_signers
from services.mint.config import MintSettings
from services.mint.core import MintInput
from tests.mint.fixtures import *  # noqa: F403
from tests.mint.fixtures import DEV_KEY, SECOND_ACCOUNT


class SimulatedCrash(BaseException):
    """The process dies here: nothing after this point runs."""


def request(image, key: str = "job-1", **kw) -> MintInput:
    values = {
        "idempotency_key": key,
        "title": "charcoal sketch of an inquisitive Turkish boy: Emre Yilmaz",
        "description": "Emre grew up by the Bosphorus, drawing the ferries.",
        "image": image,
        "attributes": (("nationality", "Turkish"), ("age", "boy")),
    }
    values.update(kw)
    return MintInput(**values)


def nonce(minter) -> int:
    return minter.chain.w3.eth.get_transaction_count(minter.chain.address, "pending")


def test_mint_then_read_back_with_opensea_metadata(make_minter, store, image) -> None:
    minter = make_minter(mint_external_url_base="https://ganfolk.example/portraits/")
    result = minter.mint(store, request(image, recipient=SECOND_ACCOUNT))
    assert result.token_id == 1 and not result.already_minted
    assert result.chain_id == 31337 and result.contract_address == minter.contract_address
    fns = minter.contract.functions
    assert fns.ownerOf(1).call() == SECOND_ACCOUNT == result.recipient
    assert fns.tokenURI(1).call() == result.token_uri
    receipt = minter.chain.w3.eth.get_transaction_receipt(result.tx_hash)
    assert receipt["status"] == 1 and receipt["to"] == minter.contract_address

    metadata = json.loads(store.get_uri(result.token_uri))
    assert set(metadata) == {"name", "description", "image", "attributes", "external_url"}
    assert metadata["name"].endswith("Emre Yilmaz") and "Bosphorus" in metadata["description"]
    assert metadata["attributes"] == [
        {"trait_type": "nationality", "value": "Turkish"},
        {"trait_type": "age", "value": "boy"},
    ]
    assert metadata["external_url"] == "https://ganfolk.example/portraits/job-1"
    # Content-addressed: the image and the metadata are named by their sha256.
    assert store.get_uri(metadata["image"]) == image.inline_data
    assert image.sha256 in metadata["image"]
    assert result.token_uri.endswith(".json") and "/mint/metadata/" in result.token_uri

    info = minter.get_token(store, idempotency_key="job-1")
    assert (info.token_id, info.owner, info.token_uri) == (1, SECOND_ACCOUNT, result.token_uri)
    assert info.metadata == metadata
    with pytest.raises(NotFound):
        minter.get_token(store, token_id=99)
    with pytest.raises(NotFound):
        minter.get_token(store, idempotency_key="never-minted")


def test_same_key_returns_the_same_token(make_minter, store, image) -> None:
    minter = make_minter()
    first = minter.mint(store, request(image))
    sent = nonce(minter)
    again = minter.mint(store, request(image, title="a different title"))
    assert again.already_minted and again.token_id == first.token_id and again.tx_hash == first.tx_hash
    assert nonce(minter) == sent, "a repeated key must not send a transaction"
    other = minter.mint(store, request(image, key="job-2"))
    assert other.token_id == 2 and minter.total_minted() == 2


def test_crash_after_broadcast_then_retry_mints_nothing_new(make_minter, store, image) -> None:
    minter = make_minter()
    crashed: list[Sent] = []

    def crash(sent: Sent) -> None:
        crashed.append(sent)
        raise SimulatedCrash

    minter.chain.after_broadcast = crash
    with pytest.raises(SimulatedCrash):
        minter.mint(store, request(image))
    assert minter.total_minted() == 1  # it was mined; the process died before recording that
    before = nonce(minter)

    forget_signers()  # a new process: no signer, no nonce counter, no locks
    restarted = make_minter()
    result = restarted.mint(store, request(image))
    assert result.token_id == 1 and result.already_minted
    assert result.tx_hash == crashed[0].tx_hash
    assert restarted.total_minted() == 1 and nonce(restarted) == before


def test_crash_before_broadcast_resends_the_recorded_transaction(make_minter, store, image) -> None:
    minter = make_minter()
    recorded: list[Sent] = []

    def crash(sent: Sent) -> None:
        recorded.append(sent)
        raise SimulatedCrash

    minter.chain.after_record = crash
    before = nonce(minter)
    with pytest.raises(SimulatedCrash):
        minter.mint(store, request(image))
    assert minter.total_minted() == 0 and nonce(minter) == before

    forget_signers()
    result = make_minter().mint(store, request(image))
    assert result.tx_hash == recorded[0].tx_hash, "the recorded bytes are sent, not a new transaction"
    assert result.token_id == 1 and not result.already_minted
    assert minter.total_minted() == 1 and nonce(minter) == before + 1


def test_receipt_timeout_is_unknown_and_the_retry_follows_the_recorded_tx(
    fresh_anvil: Anvil, tmp_path, store, image
) -> None:
    settings = MintSettings(
        mint_rpc_url=fresh_anvil.url, state_dir=tmp_path / "state", mint_receipt_timeout_s=0.5
    )
    from services.mint.core import load_minter

    minter = load_minter(settings)
    fresh_anvil.rpc("evm_setAutomine", [False])
    with pytest.raises(ReceiptUnknown, match="unknown, not failed") as err:
        minter.mint(store, request(image))
    assert isinstance(err.value, Transient)
    pending = fresh_anvil.rpc("txpool_content")["pending"]
    assert sum(len(v) for v in pending.values()) == 1

    forget_signers()
    retry = load_minter(settings)
    with pytest.raises(ReceiptUnknown):
        retry.mint(store, request(image))  # still pending: followed, not re-sent
    pending = fresh_anvil.rpc("txpool_content")["pending"]
    assert sum(len(v) for v in pending.values()) == 1

    fresh_anvil.rpc("evm_mine")
    result = retry.mint(store, request(image))
    assert result.token_id == 1 and result.tx_hash == err.value.tx_hash and result.already_minted
    assert retry.total_minted() == 1
    fresh_anvil.rpc("evm_setAutomine", [True])


def test_five_concurrent_mints_get_five_tokens_without_nonce_errors(make_minter, store, image) -> None:
    minter = make_minter()
    before = nonce(minter)
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda i: minter.mint(store, request(image, key=f"job-c{i}")), range(5)))
    assert sorted(r.token_id for r in results) == [1, 2, 3, 4, 5]
    assert len({r.tx_hash for r in results}) == 5
    nonces = sorted(minter.chain.w3.eth.get_transaction(r.tx_hash)["nonce"] for r in results)
    assert nonces == list(range(before, before + 5))
    # The same five keys again, concurrently: the same five tokens, nothing sent.
    with ThreadPoolExecutor(5) as pool:
        again = list(pool.map(lambda i: minter.mint(store, request(image, key=f"job-c{i}")), range(5)))
    assert [r.token_id for r in again] == [r.token_id for r in results]
    assert all(r.already_minted for r in again) and nonce(minter) == before + 5


def test_insufficient_funds_is_a_clear_failed_precondition(make_minter, store, image, caplog) -> None:
    owner = make_minter()
    poor = Account.create()
    fns = owner.contract.functions
    owner.chain.wait_receipt(owner.chain.transact(fns.setMinter(poor.address, True)).tx_hash)
    unfunded = make_minter(mint_private_key=poor.key.hex(), mint_contract_address=owner.contract_address)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FailedPrecondition, match="insufficient funds") as err:
        unfunded.mint(store, request(image))
    assert poor.address in str(err.value) and "fund" in str(err.value)
    assert poor.key.hex().removeprefix("0x") not in str(err.value) + caplog.text
    assert owner.total_minted() == 0


@pytest.mark.parametrize(
    ("recipient", "message"),
    [
        ("0x1234", "not a valid 0x address"),
        ("not-an-address", "not a valid 0x address"),
        ("0x70997970c51812dc3A010C7d01b50e0d17dc79C8", "EIP-55 checksum"),  # one letter in the wrong case
        ("0x0000000000000000000000000000000000000000", "zero address"),
    ],
)
def test_bad_recipient_is_invalid_argument(make_minter, store, image, recipient: str, message: str) -> None:
    minter = make_minter()
    with pytest.raises(InvalidArgument, match=message):
        minter.mint(store, request(image, recipient=recipient))


def test_bad_requests_are_invalid_argument(make_minter, store, image) -> None:
    minter = make_minter()
    from ganfolk.v1 import common_pb2

    with pytest.raises(InvalidArgument, match="idempotency_key is required"):
        minter.mint(store, request(image, key=""))
    with pytest.raises(InvalidArgument, match="title is required"):
        minter.mint(store, request(image, title=" "))
    with pytest.raises(InvalidArgument, match="image is required"):
        minter.mint(store, request(common_pb2.ImageRef()))
    with pytest.raises(ValueError, match="not an image"):
        minter.mint(store, request(common_pb2.ImageRef(inline_data=b"definitely not a png")))
    assert minter.total_minted() == 0


def test_chain_unreachable_is_transient(fresh_anvil: Anvil, tmp_path, store, image) -> None:
    settings = MintSettings(mint_rpc_url=fresh_anvil.url, state_dir=tmp_path / "state", mint_rpc_timeout_s=2)
    from services.mint.core import load_minter

    minter = load_minter(settings)
    fresh_anvil.stop()
    with pytest.raises(Transient, match="unreachable") as err:
        minter.mint(store, request(image))
    assert f"127.0.0.1:{fresh_anvil.port}" in str(err.value)
    with_key = settings.model_copy(update={"mint_rpc_url": fresh_anvil.url + "/v2/SECRET-API-KEY"})
    with pytest.raises(Transient, match="unreachable") as err:
        load_minter(with_key)
    assert "SECRET-API-KEY" not in str(err.value), "RPC URLs may carry API keys: only the host is shown"


def test_fee_floor_and_poa_middleware(make_minter, store, image) -> None:
    minter = make_minter(mint_min_priority_fee_gwei=30, mint_poa=True)
    result = minter.mint(store, request(image))
    tx = minter.chain.w3.eth.get_transaction(result.tx_hash)
    assert tx["type"] == 2 and tx["maxPriorityFeePerGas"] >= 30 * GWEI
    assert tx["maxFeePerGas"] >= tx["maxPriorityFeePerGas"]
    assert "poa" in minter.chain.w3.middleware_onion
    capped = make_minter(mint_max_fee_gwei=0.000001)
    with pytest.raises(Transient, match="GANFOLK_MINT_MAX_FEE_GWEI"):
        capped.mint(store, request(image, key="job-capped"))


def test_configuration_errors(anvil: Anvil, mint_settings, tmp_path) -> None:
    with pytest.raises(ConfigError, match="GANFOLK_MINT_CHAIN_ID is 137"):
        Chain(mint_settings(mint_chain_id=137))
    with pytest.raises(ConfigError, match="not a valid private key") as err:
        Chain(mint_settings(mint_private_key="0xnot-a-key-but-maybe-a-secret"))
    assert "maybe-a-secret" not in str(err.value) and err.value.__cause__ is None
    from services.mint.core import load_minter

    with pytest.raises(ConfigError, match="has no contract"):
        load_minter(mint_settings(mint_contract_address="0x" + "11" * 20))
    with Anvil.start(chain_id=80002, log_dir=tmp_path) as amoy_like:
        settings = MintSettings(mint_rpc_url=amoy_like.url, mint_private_key=DEV_KEY, state_dir=tmp_path)
        with pytest.raises(ConfigError, match="GANFOLK_MINT_CONTRACT_ADDRESS is required on chain 80002"):
            load_minter(settings)
        with pytest.raises(ConfigError, match="GANFOLK_MINT_PRIVATE_KEY is required on chain 80002"):
            Chain(MintSettings(mint_rpc_url=amoy_like.url))


def test_private_key_never_appears_in_logs_or_errors(
    make_minter, mint_settings, store, image, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # web3 and urllib3 log requests at DEBUG
    secret = DEV_KEY.removeprefix("0x").lower()
    minter = make_minter()
    texts = [repr(mint_settings()), str(mint_settings().model_dump()), repr(minter.chain.signer)]
    minter.mint(store, request(image))
    for bad in (request(image, key="job-bad", recipient="0x12"), request(image, key="")):
        with pytest.raises(InvalidArgument) as err:
            minter.mint(store, bad)
        texts.append(str(err.value))
    assert Web3.to_checksum_address(minter.chain.address)  # the address is public; the key is not
    for text in [*texts, caplog.text]:
        assert secret not in text.lower()


def test_fees_over_the_ceiling_wait_then_give_up_as_transient(make_minter, store, image) -> None:
    import time

    make_minter()  # deploys the contract while fees are acceptable
    minter = make_minter(mint_max_fee_gwei=0.000001, mint_fee_wait_s=0.6, mint_fee_poll_s=0.2)
    before = nonce(minter)
    started = time.monotonic()
    with pytest.raises(Transient, match="GANFOLK_MINT_MAX_FEE_GWEI"):
        minter.mint(store, request(image, key="job-waits"))
    assert time.monotonic() - started >= 0.6, "over the ceiling, minting waits before giving up"
    assert nonce(minter) == before and minter.total_minted() == 0
