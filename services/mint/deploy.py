"""Deploying GanfolkPortraits from the committed artifact, and reading a deployment back.

Used by ``ganfolk contract deploy|info`` and by the service when it deploys its own
contract on a local development chain. The collection metadata (``contractURI()``) is
published with the service's publisher before the deployment, so a marketplace sees the
collection's name, image and royalty from the first block.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import Web3

from ganfolk.runtime.errors import FailedPrecondition, InvalidArgument
from ganfolk.runtime.storage import ObjectStore
from services.mint.chain import GWEI, Chain
from services.mint.config import MintSettings
from services.mint.metadata import collection_metadata, encode
from services.mint.publish import Publisher

log = logging.getLogger(__name__)

ARTIFACT = Path(__file__).resolve().parent / "contracts" / "GanfolkPortraits.json"
# What each chain's fees are paid in, for the dry run's cost line.
CURRENCY = {1: "ETH", 137: "POL", 80002: "POL", 31337: "ETH", 1337: "ETH", 11155111: "ETH"}
# Polygon PoS chains: PoA extra data and a priority-fee floor.
POLYGON_CHAIN_IDS = frozenset({137, 80002})


def load_artifact(path: Path | None = None) -> dict[str, Any]:
    """The compiled contract: abi, creation bytecode and runtime (deployed) bytecode."""
    artifact: dict[str, Any] = json.loads((path or ARTIFACT).read_text())
    for field in ("abi", "bytecode", "deployedBytecode"):
        if field not in artifact:
            raise InvalidArgument(f"{path or ARTIFACT} is not a contract artifact: no {field!r}")
    return artifact


def runtime_code(artifact: dict[str, Any]) -> bytes:
    return bytes.fromhex(str(artifact["deployedBytecode"]).removeprefix("0x"))


def publish_collection(
    settings: MintSettings, store: ObjectStore, publisher: Publisher, owner: str, dry_run: bool = False
) -> tuple[str, dict[str, Any]]:
    """Publish the collection metadata (and its image); returns (contractURI, metadata).

    ``dry_run`` computes the same URIs without publishing anything.
    """
    image_uri = ""
    if settings.mint_collection_image:
        source = settings.mint_collection_image
        data = store.get_uri(source) if "://" in source else Path(source).read_bytes()
        ext = Path(source.split("?", 1)[0]).suffix.lstrip(".").lower() or "png"
        media = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
        if dry_run:
            image_uri = publisher.uri_for(store, "images", data, ext)
        else:
            image_uri = publisher.publish(store, "images", data, media.get(ext, "image/png"), ext).uri
    metadata = collection_metadata(
        name=settings.mint_token_name,
        description=settings.mint_collection_description,
        image_uri=image_uri,
        external_link=settings.mint_collection_external_link,
        royalty_bps=settings.mint_royalty_bps,
        fee_recipient=royalty_recipient(settings, owner),
    )
    if dry_run:
        return publisher.uri_for(store, "metadata", encode(metadata), "json"), metadata
    published = publisher.publish(store, "metadata", encode(metadata), "application/json", "json")
    return published.uri, metadata


def royalty_recipient(settings: MintSettings, owner: str) -> str:
    recipient = settings.mint_royalty_recipient.strip() or owner
    if not Web3.is_address(recipient):
        raise InvalidArgument(f"GANFOLK_MINT_ROYALTY_RECIPIENT {recipient!r} is not a 0x address")
    return Web3.to_checksum_address(recipient)


def constructor_args(settings: MintSettings, owner: str, contract_uri: str) -> tuple[Any, ...]:
    """(name, symbol, owner, contractURI, royalty receiver, royalty basis points)."""
    bps = settings.mint_royalty_bps
    if not 0 <= bps <= 10_000:
        raise InvalidArgument(f"GANFOLK_MINT_ROYALTY_BPS {bps} is outside 0..10000")
    receiver = royalty_recipient(settings, owner) if bps else "0x" + "0" * 40
    return (settings.mint_token_name, settings.mint_token_symbol, owner, contract_uri, receiver, bps)


@dataclass(frozen=True)
class Plan:
    gas: int
    max_fee_per_gas: int
    priority_fee_per_gas: int
    cost_wei: int
    currency: str

    def describe(self) -> str:
        return (
            f"estimated gas {self.gas:,}; max fee {self.max_fee_per_gas / GWEI:.3f} gwei "
            f"(tip {self.priority_fee_per_gas / GWEI:.3f} gwei); cost at most "
            f"{self.cost_wei / 10**18:.6f} {self.currency}"
        )


def plan(chain: Chain, artifact: dict[str, Any], args: tuple[Any, ...]) -> Plan:
    """Estimate the deployment's gas and worst-case cost without sending anything."""
    constructor = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"]).constructor(*args)
    gas = chain.estimate(constructor)
    fees = chain.fees()
    price = int(fees.get("maxFeePerGas", fees.get("gasPrice", 0)))
    tip = int(fees.get("maxPriorityFeePerGas", price))
    return Plan(gas, price, tip, gas * price, CURRENCY.get(chain.chain_id, "native units"))


def wait_confirmations(chain: Chain, block: int, confirmations: int, timeout: float) -> None:
    """Wait until ``block`` has ``confirmations`` blocks on top of it (itself counting as one)."""
    deadline = time.monotonic() + timeout
    while True:
        with chain.rpc("read the block number"):
            head = int(chain.w3.eth.block_number)
        if head - block + 1 >= confirmations:
            return
        if time.monotonic() >= deadline:
            raise FailedPrecondition(
                f"block {block} has {head - block + 1} of {confirmations} confirmations after {timeout:g}s"
            )
        time.sleep(1.0)


def verify(chain: Chain, address: str, artifact: dict[str, Any]) -> None:
    """FailedPrecondition unless the code at ``address`` is the artifact's runtime code."""
    code = chain.code_at(address)
    expected = runtime_code(artifact)
    if code != expected:
        raise FailedPrecondition(
            f"the code at {address} ({len(code)} bytes) is not the artifact's runtime code "
            f"({len(expected)} bytes): a different compiler, source or artifact"
        )


def deploy(
    chain: Chain,
    artifact: dict[str, Any],
    args: tuple[Any, ...],
    confirmations: int = 1,
    confirmation_timeout: float = 600.0,
) -> str:
    """Deploy, wait for ``confirmations``, verify the runtime code; returns the address."""
    constructor = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"]).constructor(*args)
    sent = chain.transact(constructor)
    receipt = chain.wait_receipt(sent.tx_hash)
    if receipt["status"] != 1 or not receipt.get("contractAddress"):
        raise FailedPrecondition(f"contract deployment {sent.tx_hash} failed")
    address = str(receipt["contractAddress"])
    wait_confirmations(chain, int(receipt["blockNumber"]), confirmations, confirmation_timeout)
    verify(chain, address, artifact)
    log.info("deployed GanfolkPortraits", extra={"contract": address, "chain_id": chain.chain_id})
    return address


@dataclass(frozen=True)
class ContractInfo:
    address: str
    name: str
    symbol: str
    owner: str
    total_supply: int
    frozen: bool
    contract_uri: str
    royalty_receiver: str
    royalty_bps: int
    code_matches: bool


def info(chain: Chain, address: str, artifact: dict[str, Any]) -> ContractInfo:
    """Name, owner, royalty (per 10,000 of a sale), frozen state and total supply of a deployment."""
    if not Web3.is_address(address):
        raise InvalidArgument(f"{address!r} is not a 0x address")
    address = Web3.to_checksum_address(address)
    code = chain.code_at(address)
    if not code:
        raise FailedPrecondition(f"no contract at {address} on chain {chain.chain_id}")
    fns = chain.w3.eth.contract(address=address, abi=artifact["abi"]).functions
    receiver, amount = chain.call(fns.royaltyInfo(0, 10_000), "read royaltyInfo")
    return ContractInfo(
        address=address,
        name=str(chain.call(fns.name(), "read name")),
        symbol=str(chain.call(fns.symbol(), "read symbol")),
        owner=str(chain.call(fns.owner(), "read owner")),
        total_supply=int(chain.call(fns.totalMinted(), "read totalMinted")),
        frozen=bool(chain.call(fns.metadataFrozen(), "read metadataFrozen")),
        contract_uri=str(chain.call(fns.contractURI(), "read contractURI")),
        royalty_receiver=str(receiver),
        royalty_bps=int(amount),
        code_matches=code == runtime_code(artifact),
    )
