"""Mint test fixtures: a real anvil chain, minters on fresh contracts, images.

Import into a test module (``from tests.mint.fixtures import *``): no conftest needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_account import Account

from ganfolk.runtime.images import inline_ref
from ganfolk.runtime.storage import LocalStore
from ganfolk.v1 import common_pb2
from services.mint.anvil import DEV_PRIVATE_KEY, Anvil
from services.mint.chain import forget_signers
from services.mint.config import MintSettings
from services.mint.core import Minter, load_minter

__all__ = ["DEV_KEY", "SECOND_KEY", "anvil", "fresh_anvil", "image", "make_minter", "mint_settings", "store"]

DEV_KEY = DEV_PRIVATE_KEY
# anvil's second dev account.
SECOND_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
SECOND_ACCOUNT = Account.from_key(SECOND_KEY).address


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    """One anvil for the session; every test deploys its own contract on it."""
    chain = Anvil.start(log_dir=tmp_path_factory.mktemp("anvil"))
    yield chain
    chain.stop()


@pytest.fixture
def fresh_anvil(tmp_path: Path) -> Iterator[Anvil]:
    """An anvil of this test's own (to stop it, or to change its mining)."""
    chain = Anvil.start(log_dir=tmp_path)
    yield chain
    chain.stop()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


@pytest.fixture
def mint_settings(anvil: Anvil, tmp_path: Path) -> Callable[..., MintSettings]:
    def make(**overrides: Any) -> MintSettings:
        values: dict[str, Any] = {
            "mint_rpc_url": anvil.url,
            "mint_chain_id": anvil.chain_id,
            "mint_private_key": DEV_KEY,
            "state_dir": tmp_path / "state",
            # The store the `store` fixture opens: collection metadata lands beside the tokens'.
            "store_url": str(tmp_path / "objects"),
            "mint_receipt_timeout_s": 20.0,
        }
        values.update(overrides)
        return MintSettings(**values)

    return make


@pytest.fixture
def make_minter(mint_settings: Callable[..., MintSettings]) -> Iterator[Callable[..., Minter]]:
    """Minters on this test's contract (deployed by the first one, reused by the next)."""

    def make(**overrides: Any) -> Minter:
        return load_minter(mint_settings(**overrides))

    yield make
    forget_signers()


@pytest.fixture
def image() -> common_pb2.ImageRef:
    rng = np.random.default_rng(7)
    return inline_ref(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
