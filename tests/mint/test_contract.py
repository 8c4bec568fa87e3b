"""The committed contract artifact is current, and the contract itself enforces one key -> one token."""

from __future__ import annotations

import json

import pytest

from ganfolk.runtime.settings import ConfigError
from services.mint.chain import Chain, Reverted
from services.mint.contracts import build
from services.mint.core import key_hash
from tests.mint.fixtures import *  # noqa: F403
from tests.mint.fixtures import SECOND_ACCOUNT, SECOND_KEY


def test_artifact_is_current() -> None:
    """Recompiling with the pinned solc + OpenZeppelin gives the committed JSON byte for byte."""
    fresh = build.render(build.compile_artifact())
    committed = build.ARTIFACT.read_text()
    assert fresh == committed, "stale artifact: run python -m services.mint.contracts.build"
    artifact = json.loads(committed)
    names = {item.get("name") for item in artifact["abi"]}
    assert {"mint", "tokenOfKey", "tokenURI", "ownerOf", "setMinter", "KeyAlreadyUsed", "Minted"} <= names
    assert artifact["bytecode"].startswith("0x6080")


def test_contract_refuses_a_second_mint_with_a_key_and_strangers(make_minter, mint_settings) -> None:
    minter = make_minter()
    fns = minter.contract.functions
    kh = key_hash("job-contract")
    sent = minter.chain.transact(fns.mint(SECOND_ACCOUNT, "ipfs://one", kh))
    assert minter.chain.wait_receipt(sent.tx_hash)["status"] == 1
    assert minter.token_of_key(kh) == 1
    assert minter.chain.call(fns.keyOfToken(1), "read") == kh
    with pytest.raises(Reverted) as err:
        minter.chain.transact(fns.mint(SECOND_ACCOUNT, "ipfs://two", kh))
    assert err.value.name == "KeyAlreadyUsed" and err.value.error_args[1] == 1
    with pytest.raises(Reverted) as err:
        minter.chain.transact(fns.mint(SECOND_ACCOUNT, "ipfs://zero", b"\0" * 32))
    assert err.value.name == "EmptyKey"
    # Another account may mint only after the owner allows it.
    with pytest.raises(ConfigError, match="neither owner nor minter"):
        make_minter(mint_private_key=SECOND_KEY, mint_contract_address=minter.contract_address)
    other = Chain(mint_settings(mint_private_key=SECOND_KEY))
    with pytest.raises(Reverted) as err:
        other.transact(fns.mint(SECOND_ACCOUNT, "ipfs://stranger", key_hash("job-stranger")))
    assert err.value.name == "NotMinter"
    minter.chain.wait_receipt(minter.chain.transact(fns.setMinter(other.address, True)).tx_hash)
    allowed = make_minter(mint_private_key=SECOND_KEY, mint_contract_address=minter.contract_address)
    sent = allowed.chain.transact(
        allowed.contract.functions.mint(SECOND_ACCOUNT, "ipfs://b", key_hash("job-b"))
    )
    allowed.chain.wait_receipt(sent.tx_hash)
    assert minter.total_minted() == 2
