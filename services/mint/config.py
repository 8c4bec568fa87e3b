"""Settings of the minting service (GANFOLK_MINT_*)."""

from __future__ import annotations

from typing import Literal

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
    # Gas-price ceiling (gwei): while base fee + tip is above it, minting waits (up to
    # mint_fee_wait_s) instead of paying; no cap when unset.
    mint_max_fee_gwei: float | None = None
    # How long one mint waits for fees under the ceiling before giving up as transient
    # (the task is retried later); 0 fails at once.
    mint_fee_wait_s: float = 0.0
    # How often fees are read again while waiting.
    mint_fee_poll_s: float = 15.0
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

    # Where the image and metadata JSON are published for marketplaces:
    #   store: the object store, at mint_public_base_url (a CDN in front of the bucket) or the
    #          store's own URIs (local use only);
    #   s3-ipfs: an S3-compatible IPFS pinning bucket (the provider returns the CID in the
    #          object's metadata, which must equal ours); URIs are ipfs://<cid>;
    #   pinning-service: the IPFS Pinning Service API; the bytes stay in the object store
    #          (reachable to the provider through mint_pinning_origins); URIs are ipfs://<cid>.
    mint_publisher: Literal["store", "s3-ipfs", "pinning-service"] = "store"
    # s3-ipfs: the bucket as a store URL, e.g. s3://portraits?endpoint=s3.filebase.com&secure=true
    mint_ipfs_s3_url: str = ""
    mint_ipfs_s3_access_key: str = ""
    mint_ipfs_s3_secret_key: SecretStr | None = None
    # Object metadata key the provider puts the CID in (x-amz-meta-<key>).
    mint_ipfs_s3_cid_key: str = "cid"
    # pinning-service: the API base (e.g. https://api.pinata.cloud/psa) and bearer token.
    mint_pinning_endpoint: str = ""
    mint_pinning_token: SecretStr | None = None
    # Comma-separated multiaddrs of IPFS peers holding the bytes, passed as the pin's origins.
    mint_pinning_origins: str = ""
    # Wait this long for a pin to reach "pinned"; past it the mint is retried later.
    mint_pinning_wait_s: float = 120.0
    mint_pinning_timeout_s: float = 20.0

    # Token metadata. {token_id}, {name} (the person) and {title} are filled in.
    mint_name_pattern: str = "GANfolk #{token_id}: {name}"
    # OpenSea background_color (six hex digits, no '#'); omitted when empty.
    mint_background_color: str = ""

    # Collection metadata (contractURI) and ERC-2981 royalty, used by `ganfolk contract deploy`
    # and by the service when it deploys its own contract on a dev chain.
    mint_collection_description: str = (
        "Portraits of people who do not exist: StyleGAN2 faces chosen and refined with CLIP and "
        "VQGAN, named and given a backstory by a language model."
    )
    # Collection image: a path or object-store URI, published like the token images.
    mint_collection_image: str = ""
    mint_collection_external_link: str = ""
    # Royalty in basis points (500 = 5%) paid to mint_royalty_recipient (default: the owner).
    mint_royalty_bps: int = 0
    mint_royalty_recipient: str = ""

    # Licence gate: on chains other than DEV_CHAIN_IDS a portrait is refused when its
    # provenance shows any of these; each override lets that one cause through, is logged,
    # and is recorded in the token's provenance.
    mint_allow_random_weights: bool = False
    mint_allow_noncommercial_model: bool = False
    mint_allow_skipped_stages: bool = False
    mint_allow_template_name: bool = False
    mint_allow_unreviewed: bool = False
    # Models whose weights may not be used commercially (ModelRef.name, case-insensitive).
    mint_noncommercial_models: str = "mobilestylegan-ffhq-openvino"
