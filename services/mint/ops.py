"""Mint and GetToken on protobuf messages, shared by the gRPC servicer and the NATS stage."""

from __future__ import annotations

import asyncio
import time

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.models import provenance
from ganfolk.runtime.storage import ObjectStore
from ganfolk.v1 import mint_pb2
from services.mint.core import Minter, MintInput, TokenInfo
from services.mint.metadata import Traits


def mint_input(request: mint_pb2.MintRequest) -> MintInput:
    """A MintRequest as core input; a pipeline task without a key mints under its job id."""
    key = request.idempotency_key or request.meta.job_id
    traits = None
    if request.HasField("traits"):
        t = request.traits
        traits = Traits(t.nationality, t.age, t.gender, t.medium, t.adjective)
    return MintInput(
        idempotency_key=key,
        title=request.title,
        description=request.description,
        image=request.image,
        attributes=tuple((a.trait_type, a.value) for a in request.attributes),
        recipient=request.recipient,
        prompt=request.prompt,
        person_name=request.person_name,
        traits=traits,
        provenance=tuple(request.provenance),
        approved_by_review=request.approved_by_review,
        seed=request.seed if request.HasField("seed") else None,
        background_color=request.background_color,
    )


async def mint(minter: Minter, store: ObjectStore, request: mint_pb2.MintRequest) -> mint_pb2.MintResponse:
    """Mint (or find) the token of a request; the licence gate and publishing run in the core."""
    started = time.perf_counter()
    result = await asyncio.to_thread(minter.mint, store, mint_input(request))
    response = mint_pb2.MintResponse(
        token_id=str(result.token_id),
        contract_address=result.contract_address,
        chain_id=result.chain_id,
        transaction_hash=result.tx_hash,
        token_uri=result.token_uri,
        recipient=result.recipient,
        already_minted=result.already_minted,
        image_uri=result.image_uri,
        image_cid=result.image_cid,
        metadata_cid=result.metadata_cid,
        licence_overrides=list(result.licence_overrides),
    )
    parameters = {
        "chain_id": result.chain_id,
        "contract_address": result.contract_address,
        "idempotency_key": request.idempotency_key or request.meta.job_id,
        "rpc": minter.chain.rpc_host,
        "token_uri": result.token_uri,
        "publisher": minter.settings.mint_publisher,
        # The licence checks an operator's override let through (empty when none did).
        "licence_overrides": list(result.licence_overrides),
    }
    response.provenance.CopyFrom(provenance("mint", [], parameters, started))
    return response


def _token_response(info: TokenInfo) -> mint_pb2.GetTokenResponse:
    md = info.metadata
    attributes = [
        mint_pb2.Attribute(trait_type=str(a.get("trait_type", "")), value=str(a.get("value", "")))
        for a in md.get("attributes", [])
        if isinstance(a, dict)
    ]
    return mint_pb2.GetTokenResponse(
        token_id=str(info.token_id),
        contract_address=info.contract_address,
        chain_id=info.chain_id,
        owner=info.owner,
        token_uri=info.token_uri,
        name=str(md.get("name", "")),
        description=str(md.get("description", "")),
        image=str(md.get("image", "")),
        attributes=attributes,
        external_url=str(md.get("external_url", "")),
        background_color=str(md.get("background_color", "")),
        uri_frozen=info.uri_frozen,
    )


async def get_token(
    minter: Minter, store: ObjectStore, request: mint_pb2.GetTokenRequest
) -> mint_pb2.GetTokenResponse:
    """A token by id or idempotency key, with the metadata read back from the store's copy."""
    which = request.WhichOneof("key")
    if which == "token_id":
        text = request.token_id.strip()
        if not text.isdigit() or int(text) == 0 or int(text) >= 2**256:
            raise InvalidArgument(f"token_id {request.token_id!r} is not a positive decimal uint256")
        info = await asyncio.to_thread(minter.get_token, store, int(text))
    elif which == "idempotency_key":
        info = await asyncio.to_thread(minter.get_token, store, None, request.idempotency_key)
    else:
        raise InvalidArgument("set token_id or idempotency_key")
    return _token_response(info)
