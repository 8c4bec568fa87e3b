"""The licence gate: what may be minted on a chain that is not a local development chain.

A token on a public chain is an offer to sell. The demo stack makes portraits that must not
be sold: random weights, the MobileStyleGAN demo generator (non-commercial weights), rank or
refine skipped, a name from the template writer instead of a language model, or nobody
reviewing the result. Each cause is read from the job's provenance records and the review
flag; each has an operator override (``GANFOLK_MINT_ALLOW_*``) that lets that one cause
through, is logged, and is recorded in the token's provenance.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ganfolk.runtime.errors import FailedPrecondition
from ganfolk.v1 import common_pb2
from services.mint.config import DEV_CHAIN_IDS, MintSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cause:
    name: str  # recorded in provenance and responses
    setting: str  # the override
    reason: str


def _name_provenance(provenance: Sequence[common_pb2.Provenance]) -> list[common_pb2.Provenance]:
    # The name stage's record is the text service's with max_attempts (backstory has max_words).
    out = []
    for prov in provenance:
        if prov.service != "text":
            continue
        keys = set(prov.parameters.fields) if prov.HasField("parameters") else set()
        if "max_attempts" in keys and "max_words" not in keys and "count" not in keys:
            out.append(prov)
    return out


def licence_causes(
    settings: MintSettings, provenance: Sequence[common_pb2.Provenance], approved_by_review: bool
) -> list[Cause]:
    """Every reason the portrait may not be sold, whatever the chain (overrides not applied)."""
    causes: list[Cause] = []
    generators = [p for p in provenance if p.service == "stylegan"]
    random = sorted({m.name or p.service for p in provenance for m in p.models if m.random_weights})
    if random:
        causes.append(
            Cause(
                "random_weights",
                "GANFOLK_MINT_ALLOW_RANDOM_WEIGHTS",
                f"made with random weights ({', '.join(random)})",
            )
        )
    elif not generators:
        causes.append(
            Cause(
                "random_weights",
                "GANFOLK_MINT_ALLOW_RANDOM_WEIGHTS",
                "its provenance names no generator, so trained weights cannot be shown",
            )
        )
    blocked = {m.strip().lower() for m in settings.mint_noncommercial_models.split(",") if m.strip()}
    noncommercial = sorted(
        {
            m.name
            for p in generators
            for m in p.models
            if m.name.lower() in blocked or (p.HasField("parameters") and "license" in p.parameters.fields)
        }
    )
    if noncommercial:
        causes.append(
            Cause(
                "non_commercial_model",
                "GANFOLK_MINT_ALLOW_NONCOMMERCIAL_MODEL",
                f"its generator {', '.join(noncommercial)} has non-commercial weights",
            )
        )
    services = {p.service for p in provenance}
    skipped = [stage for stage, service in (("rank", "clip"), ("refine", "vqgan")) if service not in services]
    if skipped:
        causes.append(
            Cause(
                "skipped_stages",
                "GANFOLK_MINT_ALLOW_SKIPPED_STAGES",
                f"the {' and '.join(skipped)} stage{'s' if len(skipped) > 1 else ''} did not run",
            )
        )
    names = _name_provenance(provenance)
    if not names:
        causes.append(
            Cause(
                "template_name",
                "GANFOLK_MINT_ALLOW_TEMPLATE_NAME",
                "its provenance has no name stage, so a language-model name cannot be shown",
            )
        )
    elif any(f.startswith("template-writer") for p in names for f in p.fallbacks):
        causes.append(
            Cause(
                "template_name", "GANFOLK_MINT_ALLOW_TEMPLATE_NAME", "its name came from the template writer"
            )
        )
    if not approved_by_review:
        causes.append(Cause("unreviewed", "GANFOLK_MINT_ALLOW_UNREVIEWED", "no review approved it"))
    return causes


_OVERRIDES = {
    "random_weights": "mint_allow_random_weights",
    "non_commercial_model": "mint_allow_noncommercial_model",
    "skipped_stages": "mint_allow_skipped_stages",
    "template_name": "mint_allow_template_name",
    "unreviewed": "mint_allow_unreviewed",
}


def check_licence(
    settings: MintSettings,
    chain_id: int,
    provenance: Sequence[common_pb2.Provenance],
    approved_by_review: bool,
    idempotency_key: str,
) -> list[str]:
    """Refuse (FailedPrecondition) what may not be sold on ``chain_id``; return the overrides used.

    Development chains mint anything: nothing there is for sale.
    """
    if chain_id in DEV_CHAIN_IDS:
        return []
    causes = licence_causes(settings, provenance, approved_by_review)
    refused = [c for c in causes if not getattr(settings, _OVERRIDES[c.name])]
    if refused:
        reasons = "; ".join(f"{c.reason} (override: {c.setting}=true)" for c in refused)
        raise FailedPrecondition(f"licence gate: will not mint on chain {chain_id}: {reasons}")
    overridden = [c.name for c in causes]
    for cause in causes:
        log.warning(
            "licence override: minting although %s",
            cause.reason,
            extra={"override": cause.setting, "idempotency_key": idempotency_key, "chain_id": chain_id},
        )
    return overridden
