"""``ganfolk contract deploy|info``: deploy GanfolkPortraits from the committed artifact, read one back.

    ganfolk contract deploy --rpc URL --chain-id 80002 --dry-run   # gas and cost, nothing sent
    ganfolk contract deploy --rpc URL --chain-id 80002             # deploy, confirm, verify
    ganfolk contract info --rpc URL --address 0x...

The deployer's key is GANFOLK_MINT_PRIVATE_KEY (on a local dev chain anvil's first account);
the collection metadata, royalty and token name come from the GANFOLK_MINT_* settings
(docs/settings.md). The RPC URL is never printed whole: it may carry an API key.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ganfolk.runtime.errors import FailedPrecondition, InvalidArgument, Transient
from ganfolk.runtime.storage import open_store
from services.mint.chain import Chain
from services.mint.config import DEV_CHAIN_IDS, MintSettings
from services.mint.deploy import (
    CURRENCY,
    POLYGON_CHAIN_IDS,
    constructor_args,
    deploy,
    info,
    load_artifact,
    plan,
    publish_collection,
)
from services.mint.publish import make_publisher

# Polygon refuses priority fees under its floor (25 gwei on Amoy and mainnet at the time of writing).
POLYGON_MIN_PRIORITY_FEE_GWEI = 30.0


def _settings(args: argparse.Namespace) -> MintSettings:
    base = MintSettings()
    overrides: dict[str, Any] = {}
    if args.rpc:
        overrides["mint_rpc_url"] = args.rpc
    if args.chain_id is not None:
        overrides["mint_chain_id"] = args.chain_id
    chain_id = args.chain_id if args.chain_id is not None else base.mint_chain_id
    if chain_id in POLYGON_CHAIN_IDS:
        overrides["mint_poa"] = True
        overrides["mint_min_priority_fee_gwei"] = max(
            base.mint_min_priority_fee_gwei, POLYGON_MIN_PRIORITY_FEE_GWEI
        )
    return base.model_copy(update=overrides)


def _deploy(args: argparse.Namespace) -> int:
    settings = _settings(args)
    artifact = load_artifact(args.artifact)
    chain = Chain(settings)
    currency = CURRENCY.get(chain.chain_id, "native units")
    print(f"chain {chain.chain_id} via {chain.rpc_host}; deployer {chain.address}")
    print(f"deployer balance {chain.balance() / 10**18:.6f} {currency}")
    store = open_store(settings.store_url)
    publisher = make_publisher(settings)
    contract_uri, collection = publish_collection(
        settings, store, publisher, chain.address, dry_run=args.dry_run
    )
    print(f"collection metadata ({'not yet published' if args.dry_run else 'published'}): {contract_uri}")
    print(f"royalty {collection['seller_fee_basis_points']} basis points to {collection['fee_recipient']}")
    ctor = constructor_args(settings, chain.address, contract_uri)
    estimate = plan(chain, artifact, ctor)
    print(estimate.describe())
    if args.dry_run:
        print("dry run: nothing was sent")
        return 0
    # A dev chain mines only when sent something: one block is all it will ever give.
    confirmations = args.confirmations or (1 if chain.chain_id in DEV_CHAIN_IDS else 3)
    address = deploy(chain, artifact, ctor, confirmations, args.confirmation_timeout)
    print(f"deployed GanfolkPortraits at {address}")
    print(f"confirmed by {confirmations} block(s); runtime code matches the artifact")
    print("settings for the mint service:")
    print(f"  GANFOLK_MINT_CHAIN_ID={chain.chain_id}")
    print(f"  GANFOLK_MINT_CONTRACT_ADDRESS={address}")
    print(f"  GANFOLK_MINT_RPC_URL=<the RPC URL you deployed through ({chain.rpc_host})>")
    print("  GANFOLK_MINT_PRIVATE_KEY=<this deployer's key, or a minter's after setMinter(account, true)>")
    if settings.mint_poa:
        print("  GANFOLK_MINT_POA=true")
    if settings.mint_min_priority_fee_gwei:
        print(f"  GANFOLK_MINT_MIN_PRIORITY_FEE_GWEI={settings.mint_min_priority_fee_gwei:g}")
    if settings.mint_publisher != "store":
        print(f"  GANFOLK_MINT_PUBLISHER={settings.mint_publisher}")
    return 0


def _info(args: argparse.Namespace) -> int:
    settings = _settings(args)
    address = args.address or settings.mint_contract_address
    if not address:
        raise InvalidArgument("give --address or set GANFOLK_MINT_CONTRACT_ADDRESS")
    chain = Chain(settings, read_only=True)
    found = info(chain, address, load_artifact(args.artifact))
    print(f"address: {found.address} (chain {chain.chain_id} via {chain.rpc_host})")
    print(f"name: {found.name} ({found.symbol})")
    print(f"owner: {found.owner}")
    print(f"total supply: {found.total_supply}")
    print(f"metadata frozen: {'yes' if found.frozen else 'no'}")
    print(f"contractURI: {found.contract_uri}")
    print(f"royalty: {found.royalty_bps} basis points to {found.royalty_receiver}")
    print(f"runtime code matches the artifact: {'yes' if found.code_matches else 'NO'}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``contract deploy`` or ``contract info``; errors are printed, not raised."""
    try:
        return int(args.contract_func(args))
    except InvalidArgument as exc:
        print(f"ganfolk contract: {exc}")
        return 2
    except (FailedPrecondition, Transient) as exc:
        print(f"ganfolk contract: {exc}")
        return 1


def add_arguments(contract: argparse.ArgumentParser) -> None:
    """The ``contract`` subcommand's actions (its parser is made by ganfolk/cli.py)."""
    actions = contract.add_subparsers(dest="action", required=True)
    deploy_p = actions.add_parser(
        "deploy", help="deploy from the committed artifact: dry run, confirmations, bytecode check"
    )
    info_p = actions.add_parser("info", help="name, owner, royalty, frozen state and total supply")
    for p in (deploy_p, info_p):
        p.add_argument("--rpc", default=None, help="JSON-RPC URL (GANFOLK_MINT_RPC_URL)")
        p.add_argument(
            "--chain-id", type=int, default=None, help="expected chain id, checked against the node"
        )
        p.add_argument(
            "--artifact", type=Path, default=None, help="a compiled artifact (default: the committed one)"
        )
    deploy_p.add_argument(
        "--dry-run", action="store_true", help="print the estimated gas and cost; send nothing"
    )
    deploy_p.add_argument(
        "--confirmations", type=int, default=0, help="blocks to wait for (default 1 on a dev chain, else 3)"
    )
    deploy_p.add_argument(
        "--confirmation-timeout", type=float, default=600.0, help="seconds to wait for the confirmations"
    )
    info_p.add_argument("--address", default=None, help="the contract (GANFOLK_MINT_CONTRACT_ADDRESS)")
    deploy_p.set_defaults(contract_func=_deploy)
    info_p.set_defaults(contract_func=_info)
    contract.set_defaults(func=run)
