"""Jobs in, what the pages show out; review forms in, jobs-API requests out (validated).

Shared by every page and action of the gallery, and free of HTTP: the web adapter
(``servicer.py``) only parses requests, calls these and renders templates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import MessageToDict

from ganfolk.runtime import limits
from ganfolk.runtime.errors import InvalidArgument
from ganfolk.v1 import common_pb2, jobs_pb2

S = jobs_pb2
TERMINAL = {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED, S.JOB_STATE_REJECTED}
# Collection filters: the portrait states a reviewer looks for.
FILTERS: dict[str, str] = {
    "": "all",
    "awaiting": "awaiting review",
    "approved": "approved",
    "minted": "minted",
    "rejected": "rejected",
}
# The form's action -> the jobs API's decision.
ACTIONS: dict[str, int] = {
    "approve": S.REVIEW_DECISION_APPROVE,
    "revise": S.REVIEW_DECISION_REVISE,
    "choose": S.REVIEW_DECISION_CHOOSE_CANDIDATE,
    "regenerate_name": S.REVIEW_DECISION_REGENERATE_NAME,
    "regenerate_backstory": S.REVIEW_DECISION_REGENERATE_BACKSTORY,
    "reject": S.REVIEW_DECISION_REJECT,
}
OUTPUT_NAME = re.compile(
    r"(final|refined|best_sample|ranked_\d{2}|snapshot_\d{4}|review_\d{2}_(final|refined))"
)
JOB_ID = limits.JOB_ID


def state_name(state: int) -> str:
    """JOB_STATE_AWAITING_REVIEW -> 'awaiting review'."""
    return S.JobState.Name(state).removeprefix("JOB_STATE_").lower().replace("_", " ")  # type: ignore[arg-type]


def stage_name(stage: int) -> str:
    return S.Stage.Name(stage).removeprefix("STAGE_").lower()  # type: ignore[arg-type]


def check_job_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise InvalidArgument(f"{job_id[:40]!r} is not a job id (job- and 24 hex digits)")
    return job_id


def check_output_name(name: str) -> str:
    if not OUTPUT_NAME.fullmatch(name):
        raise InvalidArgument(f"{name[:40]!r} is not an image of a job")
    return name


def full_name(job: jobs_pb2.Job) -> str:
    return f"{job.first_name} {job.last_name}".strip()


def portrait_filter(job: jobs_pb2.Job) -> str:
    """Which collection filter a portrait falls under ('' for none of them)."""
    if job.state == S.JOB_STATE_AWAITING_REVIEW:
        return "awaiting"
    if job.state == S.JOB_STATE_REJECTED:
        return "rejected"
    if job.token.token_id:
        return "minted"
    approved = any(r.decision in (S.REVIEW_DECISION_APPROVE, S.REVIEW_DECISION_EDIT) for r in job.reviews)
    return "approved" if approved else ""


def has(ref: common_pb2.ImageRef) -> bool:
    return ref.WhichOneof("source") is not None


@dataclass
class Summary:
    """A job as a list row or a grid tile."""

    job_id: str
    state: str
    terminal: bool
    percent: float
    stage: str
    prompt: str
    name: str
    is_collection: bool
    children: int
    has_image: bool
    filter: str
    error: str
    created: str
    counts: dict[str, int] = field(default_factory=dict)


def summary(job: jobs_pb2.Job) -> Summary:
    return Summary(
        job_id=job.job_id,
        state=state_name(job.state),
        terminal=job.state in TERMINAL,
        percent=round(job.percent, 1),
        stage=stage_name(job.stage) if job.stage else "",
        prompt=job.prompt or job.spec.prompt,
        name=full_name(job),
        is_collection=bool(job.spec.collection_size),
        children=len(job.children),
        has_image=has(job.final_image),
        filter=portrait_filter(job),
        error=job.error,
        created=job.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")
        if job.created_at.seconds
        else "",
    )


def overview(jobs: list[jobs_pb2.Job]) -> list[Summary]:
    """Top-level jobs (collections and single portraits), newest first, each collection with
    the number of its portraits per filter."""
    children: dict[str, list[jobs_pb2.Job]] = {}
    for job in jobs:
        if job.parent_id:
            children.setdefault(job.parent_id, []).append(job)
    rows = []
    for job in jobs:
        if job.parent_id:
            continue
        row = summary(job)
        for child in children.get(job.job_id, []):
            key = portrait_filter(child) or state_name(child.state)
            row.counts[key] = row.counts.get(key, 0) + 1
        rows.append(row)
    return rows


def collection_portraits(
    parent: jobs_pb2.Job, jobs: Mapping[str, jobs_pb2.Job], wanted: str
) -> list[Summary]:
    """The collection's portraits in the order of its prompts, filtered."""
    if wanted not in FILTERS:
        raise InvalidArgument(f"filter {wanted[:20]!r} is not one of: {', '.join(k for k in FILTERS if k)}")
    out = []
    for child_id in parent.children:
        child = jobs.get(child_id)
        if child is None:
            continue
        row = summary(child)
        if not wanted or row.filter == wanted:
            out.append(row)
    return out


@dataclass
class Picture:
    """An image of a job for a page: the output name it is served under, and its alt text."""

    name: str
    alt: str
    label: str
    score: float | None = None
    chosen: bool = False
    candidate: int | None = None


def _snapshot_iteration(ref: common_pb2.ImageRef) -> int | None:
    found = re.search(r"/iter-(\d+)\.png$", ref.uri)
    return int(found.group(1)) if found else None


def pictures(job: jobs_pb2.Job) -> dict[str, Any]:
    """The portrait page's images: final, candidates with scores, refinement snapshots, history."""
    person = full_name(job) or "the portrait"
    candidates: list[Picture] = []
    snapshots: list[Picture] = []
    for status in job.stages:
        if status.stage == S.STAGE_RANK and not status.skipped:
            for i, ref in enumerate(status.images):
                score = status.scores[i] if i < len(status.scores) else None
                chosen = ref.uri == job.best_sample.uri and ref.sha256 == job.best_sample.sha256
                candidates.append(
                    Picture(
                        f"ranked_{i:02d}",
                        f"Candidate {i + 1} of {len(status.images)} for {person}"
                        + (f", CLIP score {score:.3f}" if score is not None else ""),
                        f"Candidate {i + 1}",
                        score,
                        chosen,
                        i,
                    )
                )
        if status.stage == S.STAGE_REFINE and not status.skipped:
            for ref in status.images:
                iteration = _snapshot_iteration(ref)
                if iteration is not None:
                    snapshots.append(
                        Picture(
                            f"snapshot_{iteration:04d}",
                            f"{person} during refinement, iteration {iteration}",
                            f"iteration {iteration}",
                        )
                    )
    total = job.spec.refine.iterations or 50
    if has(job.refined_image):
        snapshots.append(
            Picture("refined", f"{person} after refinement, iteration {total}", f"iteration {total} (final)")
        )
    history = []
    for i, record in enumerate(job.reviews):
        if has(record.final_image) and record.final_image.uri != job.final_image.uri:
            history.append(
                Picture(
                    f"review_{i:02d}_final",
                    f"Earlier portrait replaced by review action {i + 1}",
                    f"before action {i + 1}",
                )
            )
    final = Picture("final", f"Portrait of {person}: {job.prompt}", "final") if has(job.final_image) else None
    return {"final": final, "candidates": candidates, "snapshots": snapshots, "history": history}


def provenance(job: jobs_pb2.Job) -> list[dict[str, Any]]:
    """Each stage's provenance: models with hashes, seeds, fallbacks, licence notes."""
    out = []
    for p in job.provenance:
        params = MessageToDict(p.parameters) if p.HasField("parameters") else {}
        licence = params.pop("license", "") if isinstance(params, dict) else ""
        seeds = list(p.seeds)
        out.append(
            {
                "service": p.service,
                "version": p.service_version,
                "device": p.device,
                "models": [
                    {"name": m.name, "source": m.source, "sha256": m.sha256, "random": m.random_weights}
                    for m in p.models
                ],
                "seeds": ", ".join(map(str, seeds[:8]))
                + (f" … ({len(seeds)} in all)" if len(seeds) > 8 else ""),
                "fallbacks": list(p.fallbacks),
                "licence": str(licence),
                "seconds": round(p.duration_seconds, 2),
            }
        )
    return out


def warnings(job: jobs_pb2.Job) -> list[str]:
    """What a reviewer must know before minting: licences, random weights, fallbacks, skips."""
    notes = []
    for p in job.provenance:
        params = MessageToDict(p.parameters) if p.HasField("parameters") else {}
        licence = params.get("license") if isinstance(params, dict) else None
        if licence:
            notes.append(f"{p.service}: licence: {licence}")
        if any(m.random_weights for m in p.models):
            notes.append(f"{p.service}: ran with RANDOM weights (demo/test mode)")
    for status in job.stages:
        if status.skipped:
            notes.append(f"{stage_name(status.stage)} skipped: {status.skip_reason}")
    fallbacks = sorted({f for p in job.provenance for f in p.fallbacks})
    if fallbacks:
        notes.append("fallbacks used: " + ", ".join(fallbacks))
    return notes


def token(job: jobs_pb2.Job) -> dict[str, Any] | None:
    """The minted token and the metadata it was minted with."""
    t = job.token
    if not t.token_id:
        return None
    person = full_name(job)
    return {
        "token_id": t.token_id,
        "contract": t.contract_address,
        "chain_id": t.chain_id,
        "transaction": t.transaction_hash,
        "token_uri": t.token_uri,
        "recipient": t.recipient,
        "title": f"{job.prompt} — {person}" if person else job.prompt,
        "description": job.backstory,
    }


def history(job: jobs_pb2.Job) -> list[dict[str, Any]]:
    out = []
    for record in job.reviews:
        action = (
            S.ReviewDecision.Name(record.decision).removeprefix("REVIEW_DECISION_").lower().replace("_", " ")
        )
        if record.decision == S.REVIEW_DECISION_CHOOSE_CANDIDATE:
            action += f" {record.candidate + 1}"
        out.append(
            {
                "action": action,
                "time": record.time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC"),
                "name": f"{record.first_name} {record.last_name}".strip(),
                "note": record.note,
            }
        )
    return out


def review_request(job_id: str, form: Mapping[str, str]) -> jobs_pb2.ReviewRequest:
    """The jobs-API request of a submitted review form (InvalidArgument for a malformed one).

    The form's ``version`` is the review version the page showed, so a reviewer acting on
    a page another reviewer has since changed gets a conflict rather than overwriting.
    """
    action = form.get("action", "")
    if action not in ACTIONS:
        raise InvalidArgument(f"unknown review action {action[:30]!r}; use one of {', '.join(ACTIONS)}")
    request = jobs_pb2.ReviewRequest(job_id=check_job_id(job_id), decision=ACTIONS[action])  # type: ignore[arg-type]
    version = form.get("version", "")
    if version:
        if not version.isdigit():
            raise InvalidArgument("version must be a whole number (reload the page)")
        request.expected_version = int(version)
    if action == "revise":
        request.first_name = form.get("first_name", "")
        request.last_name = form.get("last_name", "")
        request.backstory = form.get("backstory", "")
    if action == "choose":
        candidate = form.get("candidate", "")
        if not candidate.isdigit():
            raise InvalidArgument("choose a candidate")
        request.candidate = int(candidate)
    if action == "reject":
        request.note = form.get("note", "")
    return request
