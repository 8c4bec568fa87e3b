"""Review of a portrait before it is minted, as pure functions over the ``Job`` message.

Like :mod:`services.coordinator.pipeline`, nothing here talks to NATS or gRPC: the engine
runs :func:`apply_review` inside the compare-and-set update of the job's KV entry, so two
reviewers acting at once cannot both win -- the second one's update runs on the first
one's result and is refused (the job is no longer awaiting review, or its
``review_version`` moved past the one the reviewer saw).

Actions that change the portrait re-run stages in a new *review round*: choosing another
of the ranked candidates re-runs refine -> finish, regenerating the name re-runs name ->
backstory, regenerating the backstory re-runs backstory. Every action is recorded with
what it replaced (``Job.reviews``), so the job keeps its history.
"""

from __future__ import annotations

import functools
import threading
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING

from ganfolk.runtime import limits
from ganfolk.runtime.errors import Conflict, FailedPrecondition, InvalidArgument
from ganfolk.v1 import info_pb2, jobs_pb2
from services.coordinator import pipeline

if TYPE_CHECKING:
    from services.text.notability import NotabilityChecker

S = jobs_pb2
# Chains whose tokens are worth nothing (anvil, Hardhat/Ganache): minting there needs no review.
DEV_CHAIN_IDS = frozenset({31337, 1337})
MAX_NAME_CHARS = limits.MAX_NAME_CHARS  # each of first_name, last_name; also both together
MAX_BACKSTORY_CHARS = 2000
MAX_NOTE_CHARS = 500
# Review actions that change the name (and so go through the notability check).
NAMING = (S.REVIEW_DECISION_EDIT, S.REVIEW_DECISION_REVISE)
RERUNS: dict[int, tuple[int, ...]] = {
    S.REVIEW_DECISION_CHOOSE_CANDIDATE: (S.STAGE_REFINE, S.STAGE_FINISH),
    S.REVIEW_DECISION_REGENERATE_NAME: (S.STAGE_NAME, S.STAGE_BACKSTORY),
    S.REVIEW_DECISION_REGENERATE_BACKSTORY: (S.STAGE_BACKSTORY,),
}


def decision_name(decision: int) -> str:
    """'REVIEW_DECISION_CHOOSE_CANDIDATE' -> 'choose_candidate'."""
    return S.ReviewDecision.Name(decision).removeprefix("REVIEW_DECISION_").lower()  # type: ignore[arg-type]


def review_by_default(spec: jobs_pb2.JobSpec, services: dict[str, info_pb2.GetInfoResponse]) -> bool:
    """Whether a job stops for review without asking: collections, and mints on a real chain.

    A mint whose chain is unknown (no mint service has reported yet) counts as a real one:
    an unreviewed token cannot be taken back.
    """
    if spec.no_review:
        return False
    if spec.collection_size:
        return True
    if spec.mint:
        mint = services.get("mint")
        return mint is None or mint.chain_id not in DEV_CHAIN_IDS
    return False


def with_review_default(
    spec: jobs_pb2.JobSpec, services: dict[str, info_pb2.GetInfoResponse]
) -> jobs_pb2.JobSpec:
    """``spec`` with ``require_review`` set where review is on by default."""
    if spec.require_review and spec.no_review:
        raise InvalidArgument("require_review and no_review contradict each other: set one of them")
    if spec.require_review or not review_by_default(spec, services):
        return spec
    out = jobs_pb2.JobSpec()
    out.CopyFrom(spec)
    out.require_review = True
    return out


def _plain_text(value: str, field: str, limit: int, multiline: bool = False) -> str:
    """A text field as a person typed it: bounded, without control characters.

    Markup is allowed and kept as typed: every reader shows it as text (the gallery escapes
    it), and the token's metadata is JSON.
    """
    value = value.strip()
    if len(value) > limit:
        raise InvalidArgument(f"{field} is {len(value):,} characters; keep it to {limit:,}")
    allowed = {"\n", "\t"} if multiline else set()
    bad = sorted({c for c in value if unicodedata.category(c) == "Cc" and c not in allowed and c != "\r"})
    if bad:
        raise InvalidArgument(
            f"{field} contains control characters ({', '.join(repr(c) for c in bad)}); remove them"
        )
    return value.replace("\r\n", "\n")


def validate_request(request: jobs_pb2.ReviewRequest) -> jobs_pb2.ReviewRequest:
    """The request with its text fields checked and trimmed (InvalidArgument otherwise)."""
    if not request.job_id:
        raise InvalidArgument("job_id is required")
    if request.decision not in S.ReviewDecision.values() or request.decision == S.REVIEW_DECISION_UNSPECIFIED:
        choices = ", ".join(n.removeprefix("REVIEW_DECISION_") for n in S.ReviewDecision.keys()[1:])
        raise InvalidArgument(f"decision is required: one of {choices}")
    out = jobs_pb2.ReviewRequest()
    out.CopyFrom(request)
    out.first_name = _plain_text(request.first_name, "first_name", MAX_NAME_CHARS)
    out.last_name = _plain_text(request.last_name, "last_name", MAX_NAME_CHARS)
    out.backstory = _plain_text(request.backstory, "backstory", MAX_BACKSTORY_CHARS, multiline=True)
    out.note = _plain_text(request.note, "note", MAX_NOTE_CHARS, multiline=True)
    if out.decision in NAMING and not (out.first_name or out.last_name or out.backstory):
        raise InvalidArgument(
            f"{decision_name(out.decision).upper()} needs first_name, last_name or backstory"
        )
    if out.decision not in NAMING and (out.first_name or out.last_name or out.backstory):
        raise InvalidArgument(
            f"{decision_name(out.decision).upper()} takes no name or backstory; send them with REVISE or EDIT"
        )
    if out.candidate and out.decision != S.REVIEW_DECISION_CHOOSE_CANDIDATE:
        raise InvalidArgument("candidate is only for CHOOSE_CANDIDATE")
    return out


def edited_name(job: jobs_pb2.Job, request: jobs_pb2.ReviewRequest) -> str:
    """The full name the request would give the job, or '' when it leaves the name as it is."""
    if request.decision not in NAMING or not (request.first_name or request.last_name):
        return ""
    first = request.first_name or job.first_name
    last = request.last_name or job.last_name
    full = f"{first} {last}".strip()
    return "" if full == f"{job.first_name} {job.last_name}".strip() else full


# Why a name is notable (None: it is not); see :func:`check_name`.
NotabilityCheck = Callable[[str], str | None]
_LOAD_LOCK = threading.Lock()


@functools.cache
def _offline_checker() -> NotabilityChecker:
    """The text service's offline check (WordNet's notable people), loaded once per process
    (about half a second) on the first edited name; the online check and a configured list
    of names are the text service's, asked over gRPC by the engine before the update."""
    from ganfolk.runtime.settings import load_settings
    from services.text.config import TextSettings
    from services.text.notability import NotabilityChecker

    wordnet = load_settings(TextSettings).text_wordnet_dir
    try:
        return NotabilityChecker(wordnet, wikipedia_api_url=None)
    except FileNotFoundError as exc:
        raise FailedPrecondition(
            f"cannot check an edited name for notable people: {exc}; names cannot be edited until it is"
        ) from None


def offline_notability(name: str) -> str | None:
    """Why ``name`` belongs to a notable person by the offline checks, or None."""
    with _LOAD_LOCK:
        checker = _offline_checker()
    return checker.offline(name)


def check_name(name: str, notability: NotabilityCheck | None = None) -> None:
    """Refuse (InvalidArgument, with the reason) a name a reviewer typed that a generated name
    could not have: not a first and last name (the text service's own parser), or a notable
    person's (``notability``; default: the text service's offline check, in this process)."""
    from services.text.core import parse_name

    if len(name) > limits.MAX_NAME_CHARS:
        # The limit a generated name has (the text service's); a longer one would fail at mint.
        raise InvalidArgument(
            f"the name {name[:40]!r}... is refused: {len(name)} characters, first and last name"
            f" together may have {limits.MAX_NAME_CHARS}; choose another name"
        )
    try:
        first, last = parse_name(name)
    except ValueError as exc:
        raise InvalidArgument(f"the name {name!r} is refused: invalid: {exc}; choose another name") from None
    reason = (notability or offline_notability)(f"{first} {last}")
    if reason:
        raise InvalidArgument(
            f"the name {name!r} is refused: notable: {first} {last} ({reason}); choose another name"
        )


def ranked_candidates(job: jobs_pb2.Job) -> list[tuple[jobs_pb2.StageStatus, int]]:
    """(rank status, index) of each ranked candidate, best first; empty when rank did not run."""
    for status in job.stages:
        if status.stage == S.STAGE_RANK and not status.skipped:
            return [(status, i) for i in range(len(status.images))]
    return []


def chosen_candidate(job: jobs_pb2.Job) -> int | None:
    """The rank of the sample the job's portrait is made from (None when not a ranked one)."""
    for status, i in ranked_candidates(job):
        if status.images[i].uri == job.best_sample.uri and status.images[i].sha256 == job.best_sample.sha256:
            return i
    return None


def _drop_stages(job: jobs_pb2.Job, stages: tuple[int, ...]) -> None:
    for i in reversed(range(len(job.stages))):
        if job.stages[i].stage in stages:
            del job.stages[i]


def apply_review(
    job: jobs_pb2.Job,
    request: jobs_pb2.ReviewRequest,
    services: dict[str, info_pb2.GetInfoResponse],
    notability: NotabilityCheck | None = None,
) -> pipeline.Advance:
    """Apply a (validated) review action to a job awaiting review; the tasks to publish.

    Raises FailedPrecondition when the job is not awaiting review, Conflict when the
    reviewer acted on an older version of it, InvalidArgument for an impossible action or
    for an edited name that is malformed or a notable person's (see :func:`check_name`).
    """
    if job.state != S.JOB_STATE_AWAITING_REVIEW:
        state = S.JobState.Name(job.state).removeprefix("JOB_STATE_").lower().replace("_", " ")
        raise FailedPrecondition(
            f"job {job.job_id} is {state}, not awaiting review"
            + (" (someone else may have reviewed it: reload it)" if job.reviews else "")
        )
    if request.HasField("expected_version") and request.expected_version != job.review_version:
        last = decision_name(job.reviews[-1].decision).replace("_", " ") if job.reviews else "a review"
        raise Conflict(
            f"job {job.job_id} changed since you loaded it (another reviewer's {last}); "
            "reload it and decide again"
        )
    decision = request.decision
    if decision in NAMING:
        # The name the job will actually carry, on the job as it is now (inside the update):
        # a name checked earlier, outside it, may have been combined with another last name.
        first = request.first_name or job.first_name
        last = request.last_name or job.last_name
        if (first, last) != (job.first_name, job.last_name):
            check_name(f"{first} {last}".strip(), notability)
    record = S.ReviewRecord(
        decision=decision,
        time=pipeline.now(),
        note=request.note,
        first_name=job.first_name,
        last_name=job.last_name,
        backstory=job.backstory,
        best_sample=job.best_sample,
        refined_image=job.refined_image,
        final_image=job.final_image,
    )
    if decision == S.REVIEW_DECISION_CHOOSE_CANDIDATE:
        _choose(job, request.candidate)
        record.candidate = request.candidate
    elif decision in (S.REVIEW_DECISION_REGENERATE_NAME, S.REVIEW_DECISION_REGENERATE_BACKSTORY):
        if not pipeline.wants_text(job):
            raise InvalidArgument(f"job {job.job_id} has no name or backstory to regenerate")
    job.review_version += 1
    if decision in RERUNS:
        job.review_round += 1
        record.round = job.review_round
    job.reviews.append(record)
    status = pipeline.stage_status(job, S.STAGE_REVIEW)
    if decision == S.REVIEW_DECISION_REJECT:
        status.state = S.JOB_STATE_REJECTED
        status.finished_at.CopyFrom(pipeline.now())
        job.state = S.JOB_STATE_REJECTED
        job.error = f"rejected in review: {request.note}" if request.note else "rejected in review"
        return pipeline.Advance([], [])
    if decision in NAMING:
        job.first_name = request.first_name or job.first_name
        job.last_name = request.last_name or job.last_name
        job.backstory = request.backstory or job.backstory
    if decision == S.REVIEW_DECISION_REVISE:
        return pipeline.Advance([], [])  # still awaiting review, now with the edits
    if decision in RERUNS:
        if decision == S.REVIEW_DECISION_REGENERATE_NAME:
            job.first_name = job.last_name = ""
        if decision != S.REVIEW_DECISION_CHOOSE_CANDIDATE:
            job.backstory = ""
        # The stages run again in the new round; review comes back when they are done.
        _drop_stages(job, (*RERUNS[decision], S.STAGE_REVIEW))
        job.state = S.JOB_STATE_RUNNING
        return pipeline.advance(job, services)
    status.finished_at.CopyFrom(pipeline.now())
    status.state = S.JOB_STATE_SUCCEEDED
    status.percent = 100
    job.state = S.JOB_STATE_RUNNING
    return pipeline.advance(job, services)


def _choose(job: jobs_pb2.Job, candidate: int) -> None:
    ranked = ranked_candidates(job)
    if not ranked:
        raise InvalidArgument(f"job {job.job_id} has no ranked candidates to choose from (rank did not run)")
    if candidate >= len(ranked):
        raise InvalidArgument(f"candidate {candidate} does not exist: choose 0..{len(ranked) - 1}")
    if chosen_candidate(job) == candidate:
        raise InvalidArgument(f"candidate {candidate} is the one this portrait is already made from")
    status, i = ranked[candidate]
    job.best_sample.CopyFrom(status.images[i])
    job.ClearField("refined_image")
    job.ClearField("final_image")
