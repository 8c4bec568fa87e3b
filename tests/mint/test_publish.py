"""Publishing on IPFS (S3 pinning bucket, Pinning Service API), OpenSea metadata, token ids in names."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from jsonschema import Draft202012Validator
from pydantic import SecretStr

from ganfolk.runtime.errors import FailedPrecondition, InvalidArgument
from ganfolk.runtime.models import provenance
from ganfolk.v1 import common_pb2
from services.mint import ipfs_cid
from services.mint.core import MintInput
from services.mint.metadata import TOKEN_SCHEMA, Traits
from tests.mint.fixtures import *  # noqa: F403
from tests.mint.fixtures import reference_cid

GENERATOR_SHA = "ab" * 32


def job_provenance() -> tuple[common_pb2.Provenance, ...]:
    """What a job's provenance records look like after every stage ran on trained weights."""
    generator = common_pb2.ModelRef(name="stylegan2-rosinality", source="s3://m/g.pt", sha256=GENERATOR_SHA)
    return (
        provenance("stylegan", [generator], {"truncation_psi": 0.7}, 0.0, seeds=[1200, 1201]),
        provenance("clip", [common_pb2.ModelRef(name="ViT-B-32", sha256="cd" * 32)], {"top_k": 14}, 0.0),
        provenance("vqgan", [common_pb2.ModelRef(name="vqgan-f16-1024")], {"iterations": 50}, 0.0),
        provenance("upscale", [common_pb2.ModelRef(name="RealESRGAN_x4plus")], {"backend": "torch"}, 0.0),
        provenance(
            "text", [common_pb2.ModelRef(name="llama-3")], {"description": "d", "max_attempts": 5}, 0.0
        ),
        provenance("text", [common_pb2.ModelRef(name="llama-3")], {"name": "n", "max_words": 120}, 0.0),
    )


def portrait(image, key: str = "job-ipfs", **kw) -> MintInput:
    values = {
        "idempotency_key": key,
        "title": "charcoal sketch of an inquisitive Turkish boy — Emre Yilmaz",
        "description": "Emre grew up by the Bosphorus, drawing the ferries.",
        "image": image,
        "prompt": "charcoal sketch of an inquisitive Turkish boy",
        "person_name": "Emre Yilmaz",
        "provenance": job_provenance(),
        "approved_by_review": True,
        "seed": 1201,
    }
    values.update(kw)
    return MintInput(**values)


def test_metadata_has_the_marketplace_fields(make_minter, store, image) -> None:
    minter = make_minter(mint_external_url_base="https://ganfolk.example/p/", mint_background_color="#F0E8D8")
    result = minter.mint(store, portrait(image))
    info = minter.get_token(store, result.token_id)
    metadata = info.metadata
    Draft202012Validator(TOKEN_SCHEMA).validate(metadata)
    assert metadata["name"] == "GANfolk #1: Emre Yilmaz"
    assert metadata["description"] == (
        "Emre grew up by the Bosphorus, drawing the ferries.\n\n"
        "Prompt: charcoal sketch of an inquisitive Turkish boy"
    )
    assert metadata["external_url"] == "https://ganfolk.example/p/job-ipfs"
    assert metadata["background_color"] == "f0e8d8"
    traits = {a["trait_type"]: a["value"] for a in metadata["attributes"]}
    assert traits == {
        "nationality": "Turkish",
        "age": "child",
        "gender": "male",
        "medium": "charcoal sketch",
        "adjective": "inquisitive",
        "prompt": "charcoal sketch of an inquisitive Turkish boy",
        "generator": "stylegan2-rosinality",
        "generator sha256": GENERATOR_SHA,
        "seed": 1201,
        "refine iterations": 50,
        "upscaler": "RealESRGAN_x4plus (torch)",
    }
    numbers = {a["trait_type"] for a in metadata["attributes"] if a.get("display_type") == "number"}
    assert numbers == {"seed", "refine iterations"}
    # Traits sent by the caller win over the prompt's parse.
    other = minter.mint(store, portrait(image, key="job-traits", traits=Traits(nationality="Ottoman")))
    other_traits = {
        a["trait_type"]: a["value"] for a in minter.get_token(store, other.token_id).metadata["attributes"]
    }
    assert other_traits["nationality"] == "Ottoman" and "age" not in other_traits
    with pytest.raises(InvalidArgument, match="six hex digits"):
        minter.mint(store, portrait(image, key="job-colour", background_color="red"))


def test_s3_ipfs_bucket_gives_ipfs_uris_with_our_cids(make_minter, store, image, ipfs_s3, s3_server) -> None:
    shim, bucket = ipfs_s3
    settings = {
        "mint_publisher": "s3-ipfs",
        "mint_ipfs_s3_url": f"s3://{bucket}?endpoint={shim.endpoint}&secure=false",
        "mint_ipfs_s3_access_key": s3_server.access_key,
        "mint_ipfs_s3_secret_key": SecretStr(s3_server.secret_key),
    }
    minter = make_minter(**settings)
    result = minter.mint(store, portrait(image))
    assert result.token_uri == f"ipfs://{result.metadata_cid}"
    assert result.image_uri == f"ipfs://{result.image_cid}" == f"ipfs://{ipfs_cid(image.inline_data)}"
    assert minter.contract.functions.tokenURI(result.token_id).call() == result.token_uri
    # The provider's CIDs (the ipfs_cid program's, via the shim) equal ours, for both objects.
    raw = s3_server.raw_client()
    body = raw.get_object(bucket, f"mint/metadata/{result.metadata_cid}.json").read()
    assert reference_cid(body) == result.metadata_cid
    metadata = json.loads(body)
    Draft202012Validator(TOKEN_SCHEMA).validate(metadata)
    assert metadata["image"] == result.image_uri
    assert minter.get_token(store, result.token_id).metadata == metadata

    shim.mode = "v0"  # a provider answering CIDv0 for the same DAG is accepted
    assert minter.mint(store, portrait(image, key="job-v0")).token_uri.startswith("ipfs://bafybei")
    shim.mode = "wrong"
    with pytest.raises(FailedPrecondition, match="differs from ours"):
        minter.mint(store, portrait(image, key="job-wrong"))


def test_pinning_service_pins_our_cids(make_minter, store, image, pinning_service, tmp_path) -> None:
    pinning_service.origin = tmp_path / "objects"  # the `store` fixture's folder
    minter = make_minter(
        mint_publisher="pinning-service",
        mint_pinning_endpoint=pinning_service.url,
        mint_pinning_token=SecretStr(pinning_service.token),
        mint_pinning_origins="/ip4/127.0.0.1/tcp/4001/p2p/QmOurNode",
    )
    result = minter.mint(store, portrait(image))
    assert {result.image_cid, result.metadata_cid} <= pinning_service.pinned
    assert result.token_uri == f"ipfs://{result.metadata_cid}"
    pins = list(pinning_service.pins.values())
    assert all(p["pin"]["origins"] == ["/ip4/127.0.0.1/tcp/4001/p2p/QmOurNode"] for p in pins)
    before = len(pins)
    minter.mint(store, portrait(image, key="job-same-image"))
    assert len(pinning_service.pins) == before + 1, "the image is pinned already: only new metadata"

    wrong = make_minter(
        mint_publisher="pinning-service",
        mint_pinning_endpoint=pinning_service.url,
        mint_pinning_token=SecretStr("not-the-token"),
    )
    with pytest.raises(FailedPrecondition, match="refused our token"):
        wrong.mint(store, portrait(image, key="job-token"))


def test_concurrent_mints_name_their_own_token_ids(make_minter, store, image) -> None:
    minter = make_minter()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: minter.mint(store, portrait(image, key=f"job-n{i}")), range(4)))
    for r in results:
        assert minter.get_token(store, r.token_id).metadata["name"] == f"GANfolk #{r.token_id}: Emre Yilmaz"


def test_a_token_id_taken_by_another_minter_is_fixed_with_set_token_uri(make_minter, store, image) -> None:
    from services.mint.core import key_hash

    minter = make_minter()
    # Another minter takes id 1 between our prediction and our mint.
    original = minter._predict_token_id

    def racing() -> int:
        predicted = original()
        fns = minter.contract.functions
        minter.chain.wait_receipt(
            minter.chain.transact(fns.mint(minter.chain.address, "ipfs://x", key_hash("other"))).tx_hash
        )
        return predicted

    minter._predict_token_id = racing  # type: ignore[method-assign]
    result = minter.mint(store, portrait(image))
    assert result.token_id == 2
    info = minter.get_token(store, 2)
    assert info.metadata["name"] == "GANfolk #2: Emre Yilmaz" and info.token_uri == result.token_uri
    events = minter.contract.events.MetadataUpdate().get_logs(from_block=0, argument_filters={})
    assert [e["args"]["_tokenId"] for e in events].count(2) == 2  # minted, then fixed
