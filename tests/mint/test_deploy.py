"""`ganfolk contract deploy|info` on anvil; royalties, contractURI, URI fixes and freezing on chain."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from pydantic import SecretStr
from web3.logs import DISCARD

from ganfolk.cli import main
from ganfolk.runtime.storage import LocalStore
from services.mint.anvil import DEV_ACCOUNT, Anvil
from services.mint.chain import Chain, Reverted
from services.mint.config import MintSettings
from services.mint.deploy import ARTIFACT, load_artifact
from services.mint.metadata import COLLECTION_SCHEMA
from tests.mint.fixtures import *  # noqa: F403
from tests.mint.fixtures import DEV_KEY, SECOND_ACCOUNT, SECOND_KEY

ROYALTY_RECIPIENT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # anvil's third account


@pytest.fixture
def deploy_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    objects = tmp_path / "objects"
    for name, value in {
        "GANFOLK_MINT_PRIVATE_KEY": DEV_KEY,
        "GANFOLK_STORE_URL": str(objects),
        "GANFOLK_MINT_PUBLISHER": "pinning-service",
        "GANFOLK_MINT_ROYALTY_BPS": "750",
        "GANFOLK_MINT_ROYALTY_RECIPIENT": ROYALTY_RECIPIENT,
        "GANFOLK_MINT_COLLECTION_EXTERNAL_LINK": "https://ganfolk.example",
    }.items():
        monkeypatch.setenv(name, value)
    return objects


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["contract", *argv])
    return code, capsys.readouterr().out


def test_deploy_dry_run_then_deploy_and_info(
    anvil: Anvil, deploy_env: Path, capsys, monkeypatch, pinning_service
) -> None:
    monkeypatch.setenv("GANFOLK_MINT_PINNING_ENDPOINT", pinning_service.url)
    monkeypatch.setenv("GANFOLK_MINT_PINNING_TOKEN", pinning_service.token)
    pinning_service.origin = deploy_env  # the provider fetches the bytes from our copy
    chain = Chain(MintSettings(mint_rpc_url=anvil.url, mint_private_key=DEV_KEY))
    nonce = chain.w3.eth.get_transaction_count(DEV_ACCOUNT)

    code, out = run_cli(capsys, "deploy", "--rpc", anvil.url, "--chain-id", "31337", "--dry-run")
    assert code == 0, out
    gas = int(re.search(r"estimated gas ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 1_000_000 < gas < 5_000_000
    assert re.search(r"cost at most \d+\.\d{6} ETH", out) and "nothing was sent" in out
    assert chain.w3.eth.get_transaction_count(DEV_ACCOUNT) == nonce, "a dry run sends nothing"
    assert not pinning_service.pins, "a dry run publishes nothing"

    code, out = run_cli(capsys, "deploy", "--rpc", anvil.url, "--chain-id", "31337")
    assert code == 0, out
    address = re.search(r"GANFOLK_MINT_CONTRACT_ADDRESS=(0x[0-9a-fA-F]{40})", out).group(1)  # type: ignore[union-attr]
    assert "runtime code matches the artifact" in out and "GANFOLK_MINT_CHAIN_ID=31337" in out
    assert chain.code_at(address) == bytes.fromhex(load_artifact()["deployedBytecode"][2:])

    contract = chain.w3.eth.contract(address=address, abi=load_artifact()["abi"])
    receiver, amount = contract.functions.royaltyInfo(1, 10_000).call()
    assert (receiver, amount) == (ROYALTY_RECIPIENT, 750)
    contract_uri = contract.functions.contractURI().call()
    assert contract_uri.startswith("ipfs://bafybei")
    cid = contract_uri.removeprefix("ipfs://")
    assert cid in pinning_service.pinned
    collection = json.loads(LocalStore(deploy_env).get(f"mint/ipfs/{cid}"))
    Draft202012Validator(COLLECTION_SCHEMA).validate(collection)
    assert collection["seller_fee_basis_points"] == 750 and collection["fee_recipient"] == ROYALTY_RECIPIENT
    assert collection["external_link"] == "https://ganfolk.example"
    assert collection["name"] == "GANfolk Portraits"

    code, out = run_cli(capsys, "info", "--rpc", anvil.url, "--address", address)
    assert code == 0, out
    assert f"owner: {DEV_ACCOUNT}" in out and "total supply: 0" in out and "metadata frozen: no" in out
    assert f"royalty: 750 basis points to {ROYALTY_RECIPIENT}" in out
    assert "runtime code matches the artifact: yes" in out and contract_uri in out


def test_deploy_fails_the_bytecode_check_on_a_different_artifact(
    anvil: Anvil, deploy_env: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("GANFOLK_MINT_PUBLISHER", "store")
    artifact = json.loads(ARTIFACT.read_text())
    # The runtime code this artifact claims is not what its creation code deploys.
    runtime = artifact["deployedBytecode"]
    flipped = f"{int(runtime[100:102], 16) ^ 0xFF:02x}"
    artifact["deployedBytecode"] = runtime[:100] + flipped + runtime[102:]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(artifact))
    code, out = run_cli(capsys, "deploy", "--rpc", anvil.url, "--artifact", str(other))
    assert code == 1
    assert "is not the artifact's runtime code" in out
    # The deployment happened; info against the committed artifact says it matches, against
    # the other one that it does not.
    address = re.search(r"code at (0x[0-9a-fA-F]{40})", out).group(1)  # type: ignore[union-attr]
    assert "matches the artifact: yes" in run_cli(capsys, "info", "--rpc", anvil.url, "--address", address)[1]
    out = run_cli(capsys, "info", "--rpc", anvil.url, "--address", address, "--artifact", str(other))[1]
    assert "matches the artifact: NO" in out


def test_deploy_on_a_wrong_chain_id_is_a_configuration_error(anvil: Anvil, deploy_env: Path, capsys) -> None:
    assert main(["contract", "deploy", "--rpc", anvil.url, "--chain-id", "80002", "--dry-run"]) == 2
    assert "GANFOLK_MINT_CHAIN_ID is 80002" in capsys.readouterr().err


def test_freeze_refuses_uri_changes_and_strangers(make_minter, store, image) -> None:
    from tests.mint.test_core import request

    minter = make_minter(mint_royalty_bps=500)
    result = minter.mint(store, request(image))
    fns = minter.contract.functions
    chain = minter.chain
    assert list(fns.royaltyInfo(result.token_id, 1000).call()) == [minter.chain.address, 50]
    assert fns.supportsInterface(bytes.fromhex("2a55205a")).call()  # ERC-2981
    assert fns.supportsInterface(bytes.fromhex("49064906")).call()  # ERC-4906

    # Before freezing, a token's URI may be fixed, with EIP-4906's MetadataUpdate.
    sent = chain.transact(fns.setTokenURI(result.token_id, "ipfs://bafyfixed"))
    receipt = chain.wait_receipt(sent.tx_hash)
    updates = minter.contract.events.MetadataUpdate().process_receipt(receipt, errors=DISCARD)
    assert [u["args"]["_tokenId"] for u in updates] == [result.token_id]
    assert fns.tokenURI(result.token_id).call() == "ipfs://bafyfixed"
    stranger = Chain(minter.settings.model_copy(update={"mint_private_key": SecretStr(SECOND_KEY)}))
    with pytest.raises(Reverted) as err:
        stranger.transact(fns.freezeMetadata())
    assert err.value.name == "OwnableUnauthorizedAccount"

    receipt = chain.wait_receipt(chain.transact(fns.freezeMetadata()).tx_hash)
    assert (
        minter.contract.events.MetadataFrozen().process_receipt(receipt, errors=DISCARD)[0]["args"][
            "totalMinted"
        ]
        == 1
    )
    assert fns.metadataFrozen().call()
    with pytest.raises(Reverted) as err:
        chain.transact(fns.setTokenURI(result.token_id, "ipfs://bafychanged"))
    assert err.value.name == "MetadataIsFrozen"
    assert fns.tokenURI(result.token_id).call() == "ipfs://bafyfixed"
    # Tokens minted after the freeze are born permanent (OpenSea's PermanentURI).
    later = minter.mint(store, request(image, key="job-after-freeze", recipient=SECOND_ACCOUNT))
    logs = minter.contract.events.PermanentURI().get_logs(from_block=0)
    assert [(e["args"]["_id"], e["args"]["_value"]) for e in logs] == [(later.token_id, later.token_uri)]
    assert minter.get_token(store, later.token_id).uri_frozen
