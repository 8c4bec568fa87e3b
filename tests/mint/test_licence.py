"""The licence gate on a chain that is not a development one (anvil started with Amoy's chain id)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ganfolk.runtime.errors import FailedPrecondition
from ganfolk.runtime.models import provenance
from ganfolk.runtime.storage import LocalStore
from ganfolk.v1 import common_pb2
from services.mint.anvil import Anvil
from services.mint.chain import Chain, forget_signers
from services.mint.config import MintSettings
from services.mint.core import load_minter
from services.mint.deploy import constructor_args, deploy, load_artifact
from tests.mint.fixtures import *  # noqa: F403
from tests.mint.fixtures import DEV_KEY
from tests.mint.test_publish import job_provenance, portrait

AMOY = 80002


@pytest.fixture(scope="module")
def amoy_like(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Anvil, str]]:
    """anvil with chain id 80002, and a contract deployed on it."""
    chain = Anvil.start(chain_id=AMOY, log_dir=tmp_path_factory.mktemp("amoy"))
    settings = MintSettings(mint_rpc_url=chain.url, mint_private_key=DEV_KEY)
    deployer = Chain(settings)
    address = deploy(
        deployer, load_artifact(), constructor_args(settings, deployer.address, "ipfs://collection")
    )
    yield chain, address
    chain.stop()
    forget_signers()


def amoy_minter(amoy_like: tuple[Anvil, str], tmp_path: Path, **overrides: Any):
    chain, address = amoy_like
    values: dict[str, Any] = {
        "mint_rpc_url": chain.url,
        "mint_chain_id": AMOY,
        "mint_private_key": DEV_KEY,
        "mint_contract_address": address,
        "state_dir": tmp_path / "state",
        "store_url": str(tmp_path / "objects"),
    }
    values.update(overrides)
    return load_minter(MintSettings(**values))


def swap(records: tuple[common_pb2.Provenance, ...], service: str, replacement: common_pb2.Provenance | None):
    out = [
        p
        for p in records
        if p.service != service or (service == "text" and "max_words" in p.parameters.fields)
    ]
    return tuple(out + ([replacement] if replacement is not None else []))


GOOD = job_provenance()
RANDOM = swap(
    GOOD,
    "stylegan",
    provenance("stylegan", [common_pb2.ModelRef(name="stylegan2", random_weights=True)], {}, 0.0),
)
MOBILE = swap(
    GOOD,
    "stylegan",
    provenance(
        "stylegan",
        [common_pb2.ModelRef(name="mobilestylegan-ffhq-openvino", sha256="ef" * 32)],
        {"license": "non-commercial research use only"},
        0.0,
    ),
)
NO_GENERATOR = tuple(p for p in GOOD if p.service != "stylegan")
NO_REFINE = tuple(p for p in GOOD if p.service != "vqgan")
NO_RANK = tuple(p for p in GOOD if p.service != "clip")
TEMPLATE = swap(
    GOOD,
    "text",
    provenance(
        "text",
        [common_pb2.ModelRef(name="template-writer")],
        {"description": "d", "max_attempts": 5},
        0.0,
        fallbacks=["template-writer (no LLM endpoint configured)"],
    ),
)

CASES = [
    ("random_weights", "mint_allow_random_weights", {"provenance": RANDOM}, "random weights"),
    ("random_weights", "mint_allow_random_weights", {"provenance": NO_GENERATOR}, "names no generator"),
    ("non_commercial_model", "mint_allow_noncommercial_model", {"provenance": MOBILE}, "non-commercial"),
    ("skipped_stages", "mint_allow_skipped_stages", {"provenance": NO_REFINE}, "refine stage did not run"),
    ("skipped_stages", "mint_allow_skipped_stages", {"provenance": NO_RANK}, "rank stage did not run"),
    ("template_name", "mint_allow_template_name", {"provenance": TEMPLATE}, "template writer"),
    ("unreviewed", "mint_allow_unreviewed", {"approved_by_review": False}, "no review approved it"),
]


@pytest.mark.parametrize(("cause", "setting", "change", "message"), CASES)
def test_gate_refuses_each_cause_and_its_override_lets_it_through(
    amoy_like, tmp_path: Path, image, caplog, cause: str, setting: str, change: dict[str, Any], message: str
) -> None:
    minter = amoy_minter(amoy_like, tmp_path)
    store = LocalStore(tmp_path / "objects")
    before = minter.total_minted()
    key = f"job-{cause}-{message.replace(' ', '-')}"
    with pytest.raises(FailedPrecondition, match=message) as err:
        minter.mint(store, portrait(image, key=key, **change))
    assert f"chain {AMOY}" in str(err.value) and setting.upper() in str(err.value).replace("GANFOLK_", "")
    assert minter.total_minted() == before and not list(store.list("mint/images/"))

    caplog.set_level(logging.WARNING)
    allowed = amoy_minter(amoy_like, tmp_path, **{setting: True})
    result = allowed.mint(store, portrait(image, key=key, **change))
    assert cause in result.licence_overrides and result.token_id == before + 1
    assert any(getattr(r, "override", "") == f"GANFOLK_{setting.upper()}" for r in caplog.records)


def test_a_clean_reviewed_portrait_passes_and_dev_chains_mint_anything(
    amoy_like, make_minter, store, tmp_path: Path, image
) -> None:
    minter = amoy_minter(amoy_like, tmp_path)
    result = minter.mint(LocalStore(tmp_path / "objects"), portrait(image, key="job-clean"))
    assert result.licence_overrides == ()
    dev = make_minter()
    assert dev.mint(
        store, portrait(image, key="job-dev", provenance=RANDOM, approved_by_review=False)
    ).token_id


async def test_gate_over_grpc_and_overrides_in_provenance(amoy_like, tmp_path: Path, image) -> None:
    from ganfolk.v1 import mint_pb2, mint_pb2_grpc
    from services.mint.main import SERVICE
    from tests.fixtures.services import serving

    chain, address = amoy_like
    env = {
        "store_url": str(tmp_path / "objects"),
        "state_dir": str(tmp_path / "state"),
        "worker_enabled": False,
        "mint_rpc_url": chain.url,
        "mint_chain_id": AMOY,
        "mint_private_key": DEV_KEY,
        "mint_contract_address": address,
    }
    request = mint_pb2.MintRequest(
        idempotency_key="job-grpc-gate",
        title="t",
        description="d",
        image=image,
        prompt="charcoal sketch of an inquisitive Turkish boy",
        person_name="Emre Yilmaz",
        provenance=list(GOOD),
    )
    import grpc

    async with serving(SERVICE, **env) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mint_pb2_grpc.MintServiceStub(channel).Mint(request)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no review approved it" in (err.value.details() or "")
    async with serving(SERVICE, **env, mint_allow_unreviewed=True) as (_, channel):
        reply = await mint_pb2_grpc.MintServiceStub(channel).Mint(request)
    assert list(reply.licence_overrides) == ["unreviewed"]
    assert list(reply.provenance.parameters["licence_overrides"]) == ["unreviewed"]
