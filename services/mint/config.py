"""Settings of the minting service (GANFOLK_MINT_*)."""

from __future__ import annotations

from pydantic import SecretStr

from ganfolk.runtime.settings import Settings

# anvil's and hardhat's chain id; the only chains where the service deploys its own contract
# and may fall back to anvil's well-known first dev account.
DEV_CHAIN_IDS = frozenset({31337, 1337})


class MintSettings(Settings):
    # JSON-RPC endpoint: anvil locally, a Polygon Amoy / mainnet RPC in production.
    # A URL with an API key in its path is never logged whole (only scheme://host).
    mint_rpc_url: str = "http://127.0.0.1:8545"
    # Expected chain id (137 Polygon, 80002 Amoy, 31337 anvil); checked against the node when set.
    mint_chain_id: int | None = None
    # Hex private key of the minting account, from a secret; never logged. On a dev chain
    # (31337/1337) it defaults to anvil's first well-known account.
    mint_private_key: SecretStr | None = None
    # Deployed GanfolkPortraits; when empty on a dev chain the service deploys one (and reuses it).
    mint_contract_address: str = ""
    mint_auto_deploy: bool = True
    mint_token_name: str = "GANfolk Portraits"
    mint_token_symbol: str = "GANFOLK"
    # Priority-fee floor: Polygon rejects tips under ~25-30 gwei.
    mint_min_priority_fee_gwei: float = 0.0
    # Refuse to pay more than this max fee per gas (gwei); no cap when unset.
    mint_max_fee_gwei: float | None = None
    # Gas limit = estimate x this margin.
    mint_gas_margin: float = 1.2
    # How long to wait for a receipt; past it the outcome is "unknown" and a retry looks the tx up.
    mint_receipt_timeout_s: float = 120.0
    mint_rpc_timeout_s: float = 15.0
    # Polygon PoS (and other PoA chains) need web3's ExtraDataToPOAMiddleware.
    mint_poa: bool = False
    # Recipient when a request names none; the minting account itself when empty.
    mint_default_recipient: str = ""
    # OpenSea "external_url" = <base>/<idempotency key>; omitted when empty.
    mint_external_url_base: str = ""
    # Public URL of the object store (e.g. https://cdn.example/ganfolk/): token URIs and the
    # metadata "image" become <base><key>. When empty they are the store's own URIs.
    mint_public_base_url: str = ""
    # Object-store prefix of images, metadata and transaction records.
    mint_prefix: str = "mint"
