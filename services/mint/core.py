"""Minting core: image + OpenSea metadata into the object store, one token per key on chain.

No gRPC or NATS here. Everything blocks (web3 and the store are synchronous); the
adapters call it through ``asyncio.to_thread``.

Exactly once per idempotency key, in three layers:

1. **On chain**: the contract maps keccak256(key) -> token id and reverts a second mint
   with the same key (``KeyAlreadyUsed``), whatever any replica does.
2. **Transaction record**: before a transaction is broadcast, its hash and signed bytes
   are written to the object store under the key. A retry after a crash or a receipt
   timeout reads the record and follows that transaction (waits for it, or re-sends the
   very same bytes if the node never saw them) instead of signing a new one.
3. **In process**: calls with the same key are serialised by a per-key lock.

Re-minting a key that already has a token returns that token with ``already_minted``;
a different title or image under the same key does not make a second token.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from web3 import Web3
from web3.logs import DISCARD

from ganfolk.runtime import limits
from ganfolk.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from ganfolk.runtime.images import decode_image
from ganfolk.runtime.settings import ConfigError
from ganfolk.runtime.storage import ObjectNotFound, ObjectStore, open_store, sha256_hex
from ganfolk.v1 import common_pb2
from services.mint.chain import Chain, Reverted, Sent, to_hex
from services.mint.config import DEV_CHAIN_IDS, MintSettings
from services.mint.deploy import constructor_args, deploy, load_artifact, publish_collection
from services.mint.licence import check_licence
from services.mint.metadata import (
    Traits,
    check_colour,
    check_name_pattern,
    encode,
    parse_traits,
    read_provenance,
    token_metadata,
)
from services.mint.publish import Published, Publisher, make_publisher, read_published

log = logging.getLogger(__name__)

ZERO_ADDRESS = "0x" + "0" * 40
MAX_KEY_CHARS = 256
MAX_TITLE_CHARS = limits.MAX_MINT_TITLE_CHARS
MAX_DESCRIPTION_CHARS = 10_000
MAX_ATTRIBUTES = 64
_MEDIA = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}


@dataclass(frozen=True)
class MintInput:
    idempotency_key: str
    title: str
    description: str
    image: common_pb2.ImageRef
    attributes: tuple[tuple[str, str], ...] = ()
    recipient: str = ""
    prompt: str = ""
    person_name: str = ""
    # None: parsed from the prompt.
    traits: Traits | None = None
    provenance: tuple[common_pb2.Provenance, ...] = ()
    approved_by_review: bool = False
    seed: int | None = None
    background_color: str = ""


@dataclass(frozen=True)
class MintResult:
    token_id: int
    tx_hash: str
    token_uri: str
    chain_id: int
    contract_address: str
    recipient: str
    already_minted: bool
    image_uri: str = ""
    image_cid: str = ""
    metadata_cid: str = ""
    licence_overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenInfo:
    token_id: int
    owner: str
    token_uri: str
    chain_id: int
    contract_address: str
    metadata: dict[str, Any] = field(default_factory=dict)
    uri_frozen: bool = False


def key_hash(idempotency_key: str) -> bytes:
    """The on-chain form of an idempotency key: keccak256 of its UTF-8 bytes."""
    return bytes(Web3.keccak(text=idempotency_key))


def check_recipient(recipient: str) -> str:
    """A checksummed 0x address, or InvalidArgument saying what is wrong with it."""
    value = recipient.strip()
    if not Web3.is_address(value):
        raise InvalidArgument(f"recipient {value!r} is not a valid 0x address of 20 bytes")
    body = value[2:]
    if body != body.lower() and body != body.upper() and not Web3.is_checksum_address(value):
        # A mixed-case address carries an EIP-55 checksum; a wrong one means a typo.
        raise InvalidArgument(f"recipient {value!r} fails its EIP-55 checksum (mixed case); check for a typo")
    checksummed = Web3.to_checksum_address(value)
    if checksummed == ZERO_ADDRESS:
        raise InvalidArgument("recipient is the zero address; tokens minted there are lost")
    return checksummed


class Minter:
    """A chain connection and the GanfolkPortraits contract the service mints on."""

    def __init__(self, settings: MintSettings, chain: Chain, contract_address: str) -> None:
        self.settings = settings
        self.chain = chain
        artifact = load_artifact()
        self.contract = chain.w3.eth.contract(
            address=Web3.to_checksum_address(contract_address), abi=artifact["abi"]
        )
        self.contract_address: str = self.contract.address
        self.chain_id = chain.chain_id
        self._key_locks: dict[str, threading.Lock] = {}
        self._key_locks_guard = threading.Lock()
        self.publisher: Publisher = make_publisher(settings)
        # Token-id prediction (see _predict_token_id): mints sent but not yet mined, and the
        # id predicted for the last one sent. Guarded by the signer's lock.
        self._inflight = 0
        self._last_predicted = 0

    # -- helpers --------------------------------------------------------------------

    def _lock_for(self, key: str) -> threading.Lock:
        with self._key_locks_guard:
            return self._key_locks.setdefault(key, threading.Lock())

    def _prefix(self) -> str:
        return self.settings.mint_prefix.strip("/")

    def record_key(self, kh: bytes) -> str:
        return f"{self._prefix()}/tx/{self.chain_id}/{self.contract_address.lower()}/{kh.hex()}.json"

    def token_of_key(self, kh: bytes) -> int:
        return int(self.chain.call(self.contract.functions.tokenOfKey(kh), "read tokenOfKey"))

    def total_minted(self) -> int:
        return int(self.chain.call(self.contract.functions.totalMinted(), "read totalMinted"))

    # -- records --------------------------------------------------------------------

    def _read_record(self, store: ObjectStore, kh: bytes) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads(store.get(self.record_key(kh)))
        except ObjectNotFound:
            return None
        return record

    def _write_record(self, store: ObjectStore, kh: bytes, record: dict[str, Any]) -> None:
        body = json.dumps(record, sort_keys=True).encode()
        store.put(self.record_key(kh), body, content_type="application/json")

    # -- content --------------------------------------------------------------------

    def _image_bytes(self, store: ObjectStore, ref: common_pb2.ImageRef) -> bytes:
        which = ref.WhichOneof("source")
        if which == "inline_data":
            data = bytes(ref.inline_data)
            if ref.sha256 and sha256_hex(data) != ref.sha256.lower():
                raise InvalidArgument("inline image does not match its sha256")
            return data
        if which == "uri":
            return store.get_uri(ref.uri, ref.sha256 or None)
        raise InvalidArgument("image is required: set image.uri (object store) or image.inline_data")

    def publish_image(self, store: ObjectStore, request: MintInput) -> Published:
        """Publish the portrait (a real, sane image, or ValueError) and return where it is."""
        data = self._image_bytes(store, request.image)
        decode_image(data, self.settings.max_image_pixels)
        fmt = Image.open(io.BytesIO(data)).format or "PNG"
        media, ext = _MEDIA.get(fmt, ("application/octet-stream", fmt.lower()))
        return self.publisher.publish(store, "images", data, media, ext)

    def metadata_for(self, request: MintInput, token_id: int, image_uri: str) -> dict[str, Any]:
        """The token's OpenSea metadata, as it will be for ``token_id``."""
        traits = request.traits if request.traits is not None else parse_traits(request.prompt)
        return token_metadata(
            token_id=token_id,
            name_pattern=self.settings.mint_name_pattern,
            title=request.title,
            person_name=request.person_name,
            prompt=request.prompt,
            backstory=request.description,
            image_uri=image_uri,
            traits=traits,
            making=read_provenance(request.provenance, request.seed),
            attributes=request.attributes,
            external_url_base=self.settings.mint_external_url_base,
            idempotency_key=request.idempotency_key,
            background_color=check_colour(request.background_color or self.settings.mint_background_color),
        )

    def publish_metadata(
        self, store: ObjectStore, request: MintInput, token_id: int, image_uri: str
    ) -> Published:
        body = encode(self.metadata_for(request, token_id, image_uri))
        return self.publisher.publish(store, "metadata", body, "application/json", "json")

    # -- mint -----------------------------------------------------------------------

    def validate(self, request: MintInput) -> str:
        """Check a request; returns the checksummed recipient."""
        key = request.idempotency_key
        if not key.strip():
            raise InvalidArgument("idempotency_key is required (the job id for pipeline jobs)")
        if len(key) > MAX_KEY_CHARS:
            raise InvalidArgument(f"idempotency_key is {len(key)} characters; at most {MAX_KEY_CHARS}")
        if not request.title.strip():
            raise InvalidArgument("title is required (prompt + the person's name)")
        if len(request.title) > MAX_TITLE_CHARS:
            raise InvalidArgument(f"title is {len(request.title)} characters; at most {MAX_TITLE_CHARS}")
        if len(request.description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgument(f"description is over {MAX_DESCRIPTION_CHARS} characters")
        if len(request.attributes) > MAX_ATTRIBUTES:
            raise InvalidArgument(f"{len(request.attributes)} attributes; at most {MAX_ATTRIBUTES}")
        for trait, _value in request.attributes:
            if not trait.strip():
                raise InvalidArgument("every attribute needs a trait_type")
        check_colour(request.background_color)
        recipient = request.recipient or self.settings.mint_default_recipient or self.chain.address
        return check_recipient(recipient)

    def _predict_token_id(self) -> int:
        """The id the next mint from this process will get; call with the signer's lock held.

        One account sends its transactions in nonce order and the chain mines them in that
        order, so while the lock is held from prediction to broadcast the ids follow the
        predictions. Another minter (or a reverted mint) can still take an id first; then
        :meth:`_fix_uri` rewrites the metadata for the real id before freezing.
        """
        minted = self.total_minted()
        if self._inflight:
            minted = max(minted, self._last_predicted)
        return minted + 1

    def mint(self, store: ObjectStore, request: MintInput) -> MintResult:
        """Mint one token for ``request.idempotency_key``, or return the one it already has."""
        recipient = self.validate(request)
        kh = key_hash(request.idempotency_key)
        with self._lock_for(request.idempotency_key):
            existing = self.token_of_key(kh)
            if existing:
                return self._existing(store, kh, existing, already=True, request=request)
            record = self._read_record(store, kh)
            if record is not None:
                resumed = self._resume(store, kh, record, request)
                if resumed is not None:
                    return resumed
            # Refused before anything is published or paid for.
            overrides = check_licence(
                self.settings,
                self.chain_id,
                request.provenance,
                request.approved_by_review,
                request.idempotency_key,
            )
            image = self.publish_image(store, request)

            def write(sent: Sent, raw: bytes) -> None:
                self._write_record(
                    store,
                    kh,
                    {
                        "idempotency_key": request.idempotency_key,
                        "tx_hash": sent.tx_hash,
                        "raw_tx": to_hex(raw),
                        "nonce": sent.nonce,
                        "from": self.chain.address,
                        "recipient": recipient,
                        "token_uri": metadata.uri,
                        "image_uri": image.uri,
                        "image_cid": image.cid,
                        "metadata_cid": metadata.cid,
                        "predicted_token_id": predicted,
                        "licence_overrides": overrides,
                        "chain_id": self.chain_id,
                        "contract": self.contract_address,
                        "status": "sent",
                        "recorded_at": time.time(),
                    },
                )

            with self.chain.signer.lock:
                predicted = self._predict_token_id()
                metadata = self.publish_metadata(store, request, predicted, image.uri)
                fn = self.contract.functions.mint(recipient, metadata.uri, kh)
                try:
                    sent = self.chain.transact(fn, record=write)
                except Reverted as exc:
                    return self._on_revert(store, kh, exc)
                self._inflight += 1
                self._last_predicted = predicted
            try:
                result = self._finish(store, kh, sent.tx_hash, already=False, request=request)
            finally:
                with self.chain.signer.lock:
                    self._inflight -= 1
            assert result is not None  # allow_failed=False raises instead
            return result

    def _fix_uri(self, store: ObjectStore, kh: bytes, token_id: int, request: MintInput | None) -> None:
        """Rewrite a token's metadata for its real id when another mint took the predicted one."""
        record = self._read_record(store, kh) or {}
        predicted = record.get("predicted_token_id")
        if predicted in (None, token_id) or record.get("uri_fixed_for") == token_id:
            return
        if request is None or not record.get("image_uri"):
            log.warning(
                "token %s has metadata written for id %s; mint again with the request to fix it",
                token_id,
                predicted,
            )
            return
        if self.chain.call(self.contract.functions.metadataFrozen(), "read metadataFrozen"):
            log.warning("token %s has metadata written for id %s but metadata is frozen", token_id, predicted)
            return
        metadata = self.publish_metadata(store, request, token_id, str(record["image_uri"]))
        sent = self.chain.transact(self.contract.functions.setTokenURI(token_id, metadata.uri))
        if self.chain.wait_receipt(sent.tx_hash)["status"] != 1:
            raise FailedPrecondition(f"setTokenURI({token_id}) transaction {sent.tx_hash} reverted")
        record.update({"token_uri": metadata.uri, "metadata_cid": metadata.cid, "uri_fixed_for": token_id})
        self._write_record(store, kh, record)
        log.info("token URI fixed for its id", extra={"token_id": token_id, "predicted": predicted})

    def _on_revert(self, store: ObjectStore, kh: bytes, exc: Reverted) -> MintResult:
        if exc.name == "KeyAlreadyUsed":  # another replica won the race for this key
            return self._existing(store, kh, int(exc.error_args[1]), already=True)
        if exc.name == "NotMinter":
            raise FailedPrecondition(
                f"the minting account {self.chain.address} may not mint on {self.contract_address}: "
                "the contract owner must call setMinter(account, true)"
            ) from None
        if exc.name.startswith("ERC721Invalid"):
            raise InvalidArgument(f"the recipient cannot receive ERC-721 tokens: {exc}") from None
        raise FailedPrecondition(str(exc)) from None

    def _resume(
        self, store: ObjectStore, kh: bytes, record: dict[str, Any], request: MintInput | None = None
    ) -> MintResult | None:
        """Follow a recorded transaction; None when it can never mine (sign a new one)."""
        tx_hash = str(record["tx_hash"])
        # Mined or pending: an earlier attempt broadcast it, and it is the one to follow.
        already = self.chain.receipt(tx_hash) is not None or self.chain.known(tx_hash)
        if not already:
            # Recorded but never reached the node (crash before broadcast, or dropped): the same bytes again.
            log.info("re-sending a recorded transaction", extra={"tx_hash": tx_hash})
            if not self.chain.rebroadcast(bytes.fromhex(str(record["raw_tx"])[2:]), tx_hash):
                # Its nonce went to another transaction; unless that one minted the key, start over.
                existing = self.token_of_key(kh)
                return (
                    self._existing(store, kh, existing, already=True, request=request) if existing else None
                )
        else:
            log.info("following a recorded transaction", extra={"tx_hash": tx_hash})
        return self._finish(store, kh, tx_hash, already=already, allow_failed=True, request=request)

    def _finish(
        self,
        store: ObjectStore,
        kh: bytes,
        tx_hash: str,
        already: bool,
        allow_failed: bool = False,
        request: MintInput | None = None,
    ) -> MintResult | None:
        receipt = self.chain.wait_receipt(tx_hash)
        if receipt["status"] != 1:
            existing = self.token_of_key(kh)
            if existing:  # lost a race to the same key: that token is the answer
                return self._existing(store, kh, existing, already=True, request=request)
            if allow_failed:
                return None
            raise FailedPrecondition(f"mint transaction {tx_hash} reverted on chain {self.chain_id}")
        token_id = 0
        for event in self.contract.events.Minted().process_receipt(receipt, errors=DISCARD):
            if bytes(event["args"]["key"]) == kh:
                token_id = int(event["args"]["tokenId"])
        token_id = token_id or self.token_of_key(kh)
        record = self._read_record(store, kh) or {}
        record.update({"status": "mined", "token_id": str(token_id), "block": int(receipt["blockNumber"])})
        self._write_record(store, kh, record)
        log.info(
            "minted", extra={"token_id": token_id, "tx_hash": tx_hash, "contract": self.contract_address}
        )
        self._fix_uri(store, kh, token_id, request)
        return self._result(store, kh, token_id, tx_hash, already)

    def _existing(
        self, store: ObjectStore, kh: bytes, token_id: int, already: bool, request: MintInput | None = None
    ) -> MintResult:
        record = self._read_record(store, kh) or {}
        tx_hash = str(record.get("tx_hash", "")) if record.get("status") == "mined" else ""
        if not tx_hash:
            tx_hash = self._find_mint_tx(kh)
        if record.get("token_id") == str(token_id):
            # A crash between the mint and its URI fix: finish the fix now.
            self._fix_uri(store, kh, token_id, request)
        return self._result(store, kh, token_id, tx_hash, already)

    def _find_mint_tx(self, kh: bytes) -> str:
        """The hash of the transaction that minted ``kh``, from the Minted event (best effort)."""
        try:
            with self.chain.rpc("read Minted logs"):
                logs = self.contract.events.Minted().get_logs(from_block=0, argument_filters={"key": kh})
            return to_hex(logs[-1]["transactionHash"]) if logs else ""
        except Exception as exc:  # log ranges are limited on public RPCs; the token is still right
            log.warning("could not find the minting transaction: %s", type(exc).__name__)
            return ""

    def _result(
        self, store: ObjectStore, kh: bytes, token_id: int, tx_hash: str, already: bool
    ) -> MintResult:
        fns = self.contract.functions
        uri = str(self.chain.call(fns.tokenURI(token_id), "read tokenURI"))
        owner = str(self.chain.call(fns.ownerOf(token_id), "read ownerOf"))
        record = self._read_record(store, kh) or {}
        return MintResult(
            token_id,
            tx_hash,
            uri,
            self.chain_id,
            self.contract_address,
            owner,
            already,
            image_uri=str(record.get("image_uri", "")),
            image_cid=str(record.get("image_cid", "")),
            metadata_cid=str(record.get("metadata_cid", "")) if uri.startswith("ipfs://") else "",
            licence_overrides=tuple(record.get("licence_overrides", ())),
        )

    # -- read -----------------------------------------------------------------------

    def get_token(
        self, store: ObjectStore, token_id: int | None = None, idempotency_key: str = ""
    ) -> TokenInfo:
        """Owner, token URI and the OpenSea metadata of a token, by id or by idempotency key."""
        if token_id is None:
            if not idempotency_key:
                raise InvalidArgument("set token_id or idempotency_key")
            token_id = self.token_of_key(key_hash(idempotency_key))
            if not token_id:
                raise NotFound(f"no token was minted for idempotency key {idempotency_key!r}")
        fns = self.contract.functions
        try:
            owner = str(self.chain.call(fns.ownerOf(token_id), "read ownerOf"))
        except Reverted as exc:
            if exc.name == "ERC721NonexistentToken":
                raise NotFound(f"token {token_id} does not exist on {self.contract_address}") from None
            raise
        uri = str(self.chain.call(fns.tokenURI(token_id), "read tokenURI"))
        metadata: dict[str, Any] = {}
        body = read_published(self.publisher, store, uri)
        if body is not None:
            try:
                metadata = json.loads(body)
            except ValueError as exc:
                log.warning("token metadata unreadable: %s", exc)
        frozen = bool(self.chain.call(fns.metadataFrozen(), "read metadataFrozen")) or bool(
            self.chain.call(fns.tokenFrozen(token_id), "read tokenFrozen")
        )
        return TokenInfo(token_id, owner, uri, self.chain_id, self.contract_address, metadata, frozen)


# --------------------------------------------------------------------------- loading


def _deployment_file(settings: MintSettings, chain_id: int) -> Path:
    return settings.state_dir / "mint" / f"deployment-{chain_id}.json"


def resolve_contract(settings: MintSettings, chain: Chain, store: ObjectStore | None = None) -> str:
    """The configured contract, or on a dev chain the one this service deployed (deploying if needed)."""
    artifact = load_artifact()
    runtime = bytes.fromhex(artifact["deployedBytecode"][2:])
    if settings.mint_contract_address:
        address = settings.mint_contract_address.strip()
        if not Web3.is_address(address):
            raise ConfigError(f"GANFOLK_MINT_CONTRACT_ADDRESS {address!r} is not a 0x address")
        if not chain.code_at(address):
            raise ConfigError(
                f"GANFOLK_MINT_CONTRACT_ADDRESS {address} has no contract on chain {chain.chain_id}"
            )
        return Web3.to_checksum_address(address)
    if not (settings.mint_auto_deploy and chain.chain_id in DEV_CHAIN_IDS):
        raise ConfigError(
            f"GANFOLK_MINT_CONTRACT_ADDRESS is required on chain {chain.chain_id}; the service deploys "
            "its own contract only on a local dev chain (31337/1337); elsewhere run `ganfolk contract deploy`"
        )
    path = _deployment_file(settings, chain.chain_id)
    if path.exists():
        address = str(json.loads(path.read_text()).get("address", ""))
        if address and chain.code_at(address) == runtime:
            log.info("reusing the deployed contract", extra={"contract": address})
            return address
    store = store or open_store(settings.store_url)
    contract_uri, _ = publish_collection(settings, store, make_publisher(settings), chain.address)
    address = deploy(chain, artifact, constructor_args(settings, chain.address, contract_uri))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"address": address, "chain_id": chain.chain_id, "owner": chain.address}) + "\n"
    )
    return address


def load_minter(settings: MintSettings) -> Minter:
    """Connect to the chain, find (or on a dev chain deploy) the contract, check the account may mint."""
    try:
        check_name_pattern(settings.mint_name_pattern)
        check_colour(settings.mint_background_color)
    except ValueError as exc:
        raise ConfigError(f"GANFOLK_MINT_NAME_PATTERN / GANFOLK_MINT_BACKGROUND_COLOR: {exc}") from None
    chain = Chain(settings)
    minter = Minter(settings, chain, resolve_contract(settings, chain))
    fns = minter.contract.functions
    owner = str(chain.call(fns.owner(), "read the contract owner"))
    if owner != chain.address and not chain.call(fns.isMinter(chain.address), "read isMinter"):
        raise ConfigError(
            f"the minting account {chain.address} is neither owner nor minter of {minter.contract_address}; "
            "the owner must call setMinter(account, true)"
        )
    log.info(
        "mint ready",
        extra={
            "chain_id": chain.chain_id,
            "rpc": chain.rpc_host,
            "contract": minter.contract_address,
            "account": chain.address,
        },
    )
    return minter
