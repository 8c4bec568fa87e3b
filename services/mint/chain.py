"""The EVM side of minting, with web3.py: signer + nonces, fees, gas, broadcast, receipts.

Rules this module keeps (each one is a production incident when broken):

* **One signer per key.** Every :class:`Chain` in the process that signs with the same key
  on the same chain shares one :class:`Signer`. Its nonce comes from the node's *pending*
  transaction count once, then from a local counter under a lock; concurrent mints never
  call ``get_transaction_count`` against each other. Any broadcast failure resynchronises.
* **Record before broadcast.** :meth:`Chain.transact` signs, hands the tx hash and raw
  bytes to a ``record`` callback (the caller stores them durably), and only then sends.
  A retry after a crash finds the record and looks the hash up instead of sending again.
* **A receipt timeout is "unknown", not "failed".** :class:`ReceiptUnknown` is transient:
  the transaction may still be mined, and a retry resumes from the record.
* **EIP-1559 fees with a floor.** Polygon rejects priority fees under ~25-30 gwei.
* **PoA chains** (Polygon) get ``ExtraDataToPOAMiddleware``.
* **The private key never leaves this module**: it is read from a ``SecretStr`` into an
  eth-account ``LocalAccount`` and used only to sign; errors name the account address and
  the RPC host, never the key or a full RPC URL (which may embed an API key).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector
from web3 import Web3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3RPCError,
)
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from ganfolk.runtime.errors import FailedPrecondition, Transient
from ganfolk.runtime.settings import ConfigError
from services.mint.anvil import DEV_PRIVATE_KEY
from services.mint.config import DEV_CHAIN_IDS, MintSettings

log = logging.getLogger(__name__)

GWEI = 10**9


class ReceiptUnknown(Transient):
    """No receipt within the timeout: the transaction may or may not be mined yet."""

    def __init__(self, tx_hash: str, timeout: float) -> None:
        super().__init__(
            f"transaction {tx_hash} has no receipt after {timeout:g}s; its outcome is unknown, not failed. "
            "It is recorded: retrying with the same idempotency key looks it up instead of sending again"
        )
        self.tx_hash = tx_hash


class Reverted(Exception):
    """A call or transaction reverted; ``name``/``args`` decode a custom error when known."""

    def __init__(self, message: str, name: str = "", args: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.error_args = args


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` of an RPC URL: paths and queries often carry API keys."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme or 'http'}://{host}{port}"


def to_hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


# --------------------------------------------------------------------------- signer


class Signer:
    """One account's signing key and nonce counter, shared by every user in the process."""

    def __init__(self, account: LocalAccount) -> None:
        self._account = account
        self.address: str = account.address
        # Held from nonce reservation to broadcast, so transactions reach the node in nonce order.
        self.lock = threading.RLock()
        self._next_nonce: int | None = None

    def __repr__(self) -> str:  # never the key
        return f"Signer({self.address})"

    def next_nonce(self, w3: Web3) -> int:
        """Reserve the next nonce; call with :attr:`lock` held."""
        if self._next_nonce is None:
            self._next_nonce = int(
                w3.eth.get_transaction_count(Web3.to_checksum_address(self.address), "pending")
            )
        nonce = self._next_nonce
        self._next_nonce += 1
        return nonce

    def resync(self) -> None:
        """Forget the local counter; the next nonce comes from the node's pending count again."""
        self._next_nonce = None

    def sign(self, tx: dict[str, Any]) -> Any:
        return self._account.sign_transaction(tx)


_SIGNERS: dict[tuple[str, int, str], Signer] = {}
_SIGNERS_LOCK = threading.Lock()


def signer_for(rpc_url: str, chain_id: int, account: LocalAccount) -> Signer:
    """The process's one :class:`Signer` for this key on this chain.

    Keyed by RPC URL too: two local dev chains share a chain id but not their nonces.
    """
    with _SIGNERS_LOCK:
        key = (rpc_url, chain_id, account.address)
        if key not in _SIGNERS:
            _SIGNERS[key] = Signer(account)
        return _SIGNERS[key]


def forget_signers() -> None:
    """Drop every signer (what a process restart does); for tests."""
    with _SIGNERS_LOCK:
        _SIGNERS.clear()


def load_account(settings: MintSettings, chain_id: int) -> LocalAccount:
    secret = settings.mint_private_key.get_secret_value() if settings.mint_private_key else ""
    if not secret:
        if chain_id in DEV_CHAIN_IDS:
            log.warning(
                "GANFOLK_MINT_PRIVATE_KEY is unset: using anvil's well-known dev account (dev chain only)"
            )
            secret = DEV_PRIVATE_KEY
        else:
            raise ConfigError(
                f"GANFOLK_MINT_PRIVATE_KEY is required on chain {chain_id} (mount it from a secret)"
            )
    try:
        account: LocalAccount = Account.from_key(secret.strip())
    except Exception:
        # Never chain the original error: its message or traceback could quote the key.
        raise ConfigError("GANFOLK_MINT_PRIVATE_KEY is not a valid private key (32 bytes, hex)") from None
    return account


# --------------------------------------------------------------------------- errors


_NETWORK_ERRORS = (
    requests.exceptions.RequestException,
    ProviderConnectionError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def _rpc_message(exc: BaseException) -> str:
    if isinstance(exc, Web3RPCError):
        resp = exc.rpc_response or {}
        err = resp.get("error") if isinstance(resp, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        return str(exc.message)
    return str(exc)


# --------------------------------------------------------------------------- chain


@dataclass(frozen=True)
class Sent:
    tx_hash: str
    nonce: int


class Chain:
    """A web3 connection to one chain with the minting account's signer."""

    def __init__(self, settings: MintSettings, read_only: bool = False) -> None:
        """Connect and check the chain id; ``read_only`` needs no key (a throwaway account signs nothing)."""
        self.settings = settings
        self.rpc_host = redact_url(settings.mint_rpc_url)
        provider = Web3.HTTPProvider(
            settings.mint_rpc_url,
            request_kwargs={"timeout": settings.mint_rpc_timeout_s},
            exception_retry_configuration=ExceptionRetryConfiguration(
                errors=(requests.exceptions.ConnectionError, requests.exceptions.Timeout),
                retries=2,
                backoff_factor=0.1,
            ),
        )
        self.w3 = Web3(provider)
        if settings.mint_poa:
            self.w3.middleware_onion.inject(ExtraDataToPOAMiddleware, name="poa", layer=0)
        with self.rpc("read the chain id"):
            self.chain_id = int(self.w3.eth.chain_id)
        if settings.mint_chain_id is not None and settings.mint_chain_id != self.chain_id:
            raise ConfigError(
                f"GANFOLK_MINT_CHAIN_ID is {settings.mint_chain_id} but {self.rpc_host} "
                f"serves chain {self.chain_id}"
            )
        if read_only:
            self.signer = Signer(Account.create())
        else:
            self.signer = signer_for(
                settings.mint_rpc_url, self.chain_id, load_account(settings, self.chain_id)
            )
        self.address = self.signer.address
        # Test hooks: called after the record is written / after the node accepted the tx.
        self.after_record: Callable[[Sent], None] | None = None
        self.after_broadcast: Callable[[Sent], None] | None = None

    @contextlib.contextmanager
    def rpc(self, what: str) -> Iterator[None]:
        """Turn network failures into :class:`Transient` errors that name the host, not the URL."""
        try:
            yield
        except _NETWORK_ERRORS as exc:
            state = "answered with an HTTP error" if isinstance(exc, requests.HTTPError) else "is unreachable"
            raise Transient(
                f"chain RPC {self.rpc_host} {state} ({type(exc).__name__}) while trying to {what}; "
                "check GANFOLK_MINT_RPC_URL and the node"
            ) from None

    # -- reads --------------------------------------------------------------------

    def balance(self, address: str | None = None) -> int:
        with self.rpc("read a balance"):
            return int(self.w3.eth.get_balance(Web3.to_checksum_address(address or self.address)))

    def code_at(self, address: str) -> bytes:
        with self.rpc("read contract code"):
            return bytes(self.w3.eth.get_code(Web3.to_checksum_address(address)))

    def call(self, fn: Any, what: str) -> Any:
        """``fn.call()`` with reverts decoded and network errors classified."""
        with self.rpc(what):
            try:
                return fn.call()
            except ContractLogicError as exc:
                raise self.decode_revert(exc, fn) from None

    def receipt(self, tx_hash: str) -> Any | None:
        with self.rpc("read a receipt"):
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None

    def known(self, tx_hash: str) -> bool:
        """Whether the node has the transaction (pending or mined)."""
        with self.rpc("look up a transaction"):
            try:
                self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
                return True
            except TransactionNotFound:
                return False

    def wait_receipt(self, tx_hash: str, timeout: float | None = None) -> Any:
        timeout = self.settings.mint_receipt_timeout_s if timeout is None else timeout
        with self.rpc("wait for a receipt"):
            try:
                return self.w3.eth.wait_for_transaction_receipt(
                    tx_hash,  # type: ignore[arg-type]
                    timeout=timeout,
                    poll_latency=0.1,
                )
            except TimeExhausted:
                raise ReceiptUnknown(tx_hash, timeout) from None

    # -- fees and gas -------------------------------------------------------------

    def fees(self) -> dict[str, int]:
        """EIP-1559 fees (legacy gas price on chains without a base fee), floor and cap applied.

        Above the ceiling (GANFOLK_MINT_MAX_FEE_GWEI) this waits, reading fees again every
        GANFOLK_MINT_FEE_POLL_S, for up to GANFOLK_MINT_FEE_WAIT_S; then it gives up with a
        Transient error, so the task is retried later instead of paying a spike.
        """
        deadline = time.monotonic() + self.settings.mint_fee_wait_s
        while True:
            try:
                return self._fees_once()
            except _OverCeiling:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.info("fees are over the ceiling; waiting", extra={"wait_s": round(left, 1)})
                time.sleep(min(self.settings.mint_fee_poll_s, left))

    def _fees_once(self) -> dict[str, int]:
        floor = int(self.settings.mint_min_priority_fee_gwei * GWEI)
        cap = int(self.settings.mint_max_fee_gwei * GWEI) if self.settings.mint_max_fee_gwei else None
        with self.rpc("read fees"):
            base = self.w3.eth.get_block("latest").get("baseFeePerGas")
            if base is None:
                price = max(int(self.w3.eth.gas_price), floor)
                if cap is not None and price > cap:
                    raise _OverCeiling(f"gas price {price / GWEI:.2f} gwei is over GANFOLK_MINT_MAX_FEE_GWEI")
                return {"gasPrice": price}
            tip = max(int(self.w3.eth.max_priority_fee), floor)
        max_fee = 2 * int(base) + tip
        if cap is not None:
            if cap < int(base) + tip:
                raise _OverCeiling(
                    f"base fee {int(base) / GWEI:.2f} gwei + tip {tip / GWEI:.2f} gwei is over "
                    f"GANFOLK_MINT_MAX_FEE_GWEI={self.settings.mint_max_fee_gwei}; retry when fees fall"
                )
            max_fee = min(max_fee, cap)
        return {"maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip, "type": 2}

    def estimate(self, fn: Any) -> int:
        with self.rpc("estimate gas"):
            try:
                gas = int(fn.estimate_gas({"from": self.address}))
            except ContractLogicError as exc:
                raise self.decode_revert(exc, fn) from None
            except Web3RPCError as exc:
                raise self._rpc_failure(exc, "estimate gas") from None
        return int(gas * self.settings.mint_gas_margin)

    def decode_revert(self, exc: ContractLogicError, fn: Any) -> Reverted:
        data = exc.data if isinstance(exc.data, str) else ""
        abi = getattr(fn, "abi", None)
        contract_abi = getattr(fn, "contract_abi", None) or []
        if data.startswith("0x") and len(data) >= 10:
            selector = bytes.fromhex(data[2:10])
            for item in [*contract_abi, *([abi] if isinstance(abi, dict) else [])]:
                if item.get("type") != "error":
                    continue
                types = [i["type"] for i in item.get("inputs", [])]
                if function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})") == selector:
                    with contextlib.suppress(Exception):
                        args = tuple(abi_decode(types, bytes.fromhex(data[10:])))
                        shown = ", ".join(to_hex(a) if isinstance(a, bytes) else str(a) for a in args)
                        return Reverted(
                            f"the contract reverted with {item['name']}({shown})", item["name"], args
                        )
        return Reverted(f"the contract reverted: {exc.message or data or 'no reason'}")

    # -- sending ------------------------------------------------------------------

    def _rpc_failure(self, exc: Web3RPCError, what: str) -> Exception:
        message = _rpc_message(exc)
        low = message.lower()
        if "insufficient funds" in low:
            return FailedPrecondition(
                f"the minting account {self.address} has too little native currency to {what}: fund it "
                f"(node said: {message})"
            )
        if "underpriced" in low or "fee cap" in low or "tip" in low:
            return Transient(
                f"the node rejected the fees ({message}); raise GANFOLK_MINT_MIN_PRIORITY_FEE_GWEI "
                "(Polygon needs about 30 gwei)"
            )
        return Transient(f"the node refused to {what}: {message}")

    def check_funds(self, gas: int, fees: dict[str, int], value: int = 0) -> None:
        price = fees.get("maxFeePerGas", fees.get("gasPrice", 0))
        need = gas * price + value
        have = self.balance()
        if have < need:
            raise FailedPrecondition(
                f"insufficient funds: the minting account {self.address} holds {have / 1e18:.6f} but the "
                f"transaction may cost up to {need / 1e18:.6f} (gas {gas} x {price / GWEI:.2f} gwei) "
                f"on chain {self.chain_id}; fund the account"
            )

    def broadcast(self, raw: bytes, tx_hash: str) -> None:
        """Send signed bytes; an 'already known' answer means the node has it, which is success."""
        with self.rpc("send a transaction"):
            try:
                self.w3.eth.send_raw_transaction(raw)
            except Web3RPCError as exc:
                low = _rpc_message(exc).lower()
                if "already known" in low or "already imported" in low or "known transaction" in low:
                    return
                if "nonce too low" in low or "nonce too high" in low or "replacement" in low:
                    raise _NonceRejected(_rpc_message(exc)) from None
                raise self._rpc_failure(exc, "send a transaction") from None

    def transact(self, fn: Any, record: Callable[[Sent, bytes], None] | None = None) -> Sent:
        """Estimate, price, sign, ``record`` (tx hash + raw bytes) and broadcast ``fn``.

        ``fn`` is a bound contract function or constructor. Returns once the node accepted
        the transaction; wait with :meth:`wait_receipt`.
        """
        gas = self.estimate(fn)
        fees = self.fees()
        self.check_funds(gas, fees)
        last: Exception | None = None
        for _attempt in range(3):
            with self.signer.lock:
                with self.rpc("read the pending nonce"):
                    nonce = self.signer.next_nonce(self.w3)
                try:
                    with self.rpc("build a transaction"):
                        tx = fn.build_transaction(
                            {
                                "from": self.address,
                                "nonce": nonce,
                                "gas": gas,
                                "chainId": self.chain_id,
                                **fees,
                            }
                        )
                    signed = self.signer.sign(tx)
                    sent = Sent(to_hex(signed.hash), nonce)
                    if record is not None:
                        record(sent, bytes(signed.raw_transaction))
                    if self.after_record:
                        self.after_record(sent)
                    self.broadcast(bytes(signed.raw_transaction), sent.tx_hash)
                except _NonceRejected as exc:
                    self.signer.resync()
                    last = Transient(f"nonce {nonce} was rejected ({exc}); resynchronised")
                    log.warning(
                        "nonce rejected, resynchronising", extra={"nonce": nonce, "account": self.address}
                    )
                    continue
                except BaseException:
                    # The node may not have taken this nonce: ask it again next time.
                    self.signer.resync()
                    raise
            log.info("transaction sent", extra={"tx_hash": sent.tx_hash, "nonce": nonce, "gas": gas})
            if self.after_broadcast:
                self.after_broadcast(sent)
            return sent
        assert last is not None
        raise last

    def rebroadcast(self, raw: bytes, tx_hash: str) -> bool:
        """Send recorded bytes again; False when the node refuses them for their nonce (superseded)."""
        try:
            self.broadcast(raw, tx_hash)
        except _NonceRejected:
            return False
        return True

    def deploy(self, abi: list[dict[str, Any]], bytecode: str, *args: Any) -> str:
        """Deploy a contract and wait for it; returns its checksummed address."""
        constructor = self.w3.eth.contract(abi=abi, bytecode=bytecode).constructor(*args)
        sent = self.transact(constructor)
        receipt = self.wait_receipt(sent.tx_hash)
        if receipt["status"] != 1 or not receipt.get("contractAddress"):
            raise FailedPrecondition(f"contract deployment {sent.tx_hash} failed")
        return str(receipt["contractAddress"])


class _NonceRejected(Exception):
    pass


class _OverCeiling(Transient):
    """Fees are above GANFOLK_MINT_MAX_FEE_GWEI: wait, or retry the task later."""
