"""Review actions on their own: default review, versions, candidates, regenerations, rounds."""

from __future__ import annotations

import re

import pytest

from ganfolk.runtime.errors import Conflict, FailedPrecondition, InvalidArgument
from ganfolk.v1 import clip_pb2, info_pb2, jobs_pb2, stylegan_pb2, text_pb2, upscale_pb2, vqgan_pb2
from services.coordinator import pipeline, review
from tests.coordinator.test_pipeline import img, new_job, result

S = jobs_pb2


def awaiting() -> jobs_pb2.Job:
    """A job driven through every stage by hand, stopped for review."""
    job = new_job(
        prompt="charcoal sketch of a shy Irish girl", num_samples=3, top_k=3, require_review=True, mint=True
    )
    step = pipeline.advance(job)
    by_stage = {t.stage: t for t in step.new}
    samples = [stylegan_pb2.SampledImage(seed=i, image=img(f"s{i}")) for i in range(3)]
    pipeline.apply_event(job, result(by_stage["sample"], sample=stylegan_pb2.SampleResponse(samples=samples)))
    pipeline.apply_event(
        job, result(by_stage["name"], name=text_pb2.NameResponse(first_name="Aoife", last_name="Byrne"))
    )
    step = pipeline.advance(job)
    by_stage = {t.stage: t for t in step.new}
    ranked = [
        clip_pb2.ScoredImage(image=img(f"s{i}"), score=0.3 - rank / 10, index=i)
        for rank, i in enumerate((2, 0, 1))
    ]
    pipeline.apply_event(job, result(by_stage["rank"], rank=clip_pb2.RankResponse(ranked=ranked, total=3)))
    pipeline.apply_event(
        job, result(by_stage["backstory"], backstory=text_pb2.BackstoryResponse(backstory="B."))
    )
    finish_refine(job, "0")
    assert job.state == S.JOB_STATE_AWAITING_REVIEW, S.JobState.Name(job.state)
    return job


def finish_refine(job: jobs_pb2.Job, tag: str) -> None:
    pipeline.advance(job)
    (refine,) = pipeline.stage_tasks(job, S.STAGE_REFINE)
    request = vqgan_pb2.RefineRequest.FromString(refine.payload)
    assert request.params.snapshot_every == pipeline.DEFAULT_SNAPSHOT_EVERY
    snaps = [img(f"{request.meta.output_prefix}/iter-0000"), img(f"{request.meta.output_prefix}/iter-0025")]
    reply = vqgan_pb2.RefineResponse(done=True, final_image=img(f"refined{tag}"), snapshots=snaps)
    pipeline.apply_event(job, result(refine, refine=reply))
    (finish,) = pipeline.advance(job).new
    pipeline.apply_event(job, result(finish, finish=upscale_pb2.FinishResponse(image=img(f"final{tag}"))))
    pipeline.advance(job)


def test_review_on_by_default_for_collections_and_real_chains() -> None:
    dev = {"mint": info_pb2.GetInfoResponse(chain_id=31337)}
    real = {"mint": info_pb2.GetInfoResponse(chain_id=137)}
    spec = jobs_pb2.JobSpec
    assert review.with_review_default(spec(collection_size=2), dev).require_review
    assert not review.with_review_default(spec(collection_size=2, no_review=True), dev).require_review
    assert not review.with_review_default(spec(mint=True), dev).require_review
    assert review.with_review_default(spec(mint=True), real).require_review
    assert review.with_review_default(spec(mint=True), {}).require_review  # chain unknown: review
    assert not review.with_review_default(spec(mint=False), real).require_review
    with pytest.raises(InvalidArgument, match="contradict"):
        review.with_review_default(spec(require_review=True, no_review=True), dev)


def test_rank_scores_and_snapshots_are_kept() -> None:
    job = awaiting()
    rank = pipeline.stage_status(job, S.STAGE_RANK)
    assert list(rank.scores) == pytest.approx([0.3, 0.2, 0.1])
    refine = pipeline.stage_status(job, S.STAGE_REFINE)
    assert [i.uri.rsplit("/", 1)[-1] for i in refine.images] == [
        "iter-0000.png",
        "iter-0025.png",
        "refined0.png",
    ]


def test_choose_candidate_reruns_refine_and_finish_in_a_new_round() -> None:
    job = awaiting()
    first_final = job.final_image.uri
    ask = review.validate_request(
        jobs_pb2.ReviewRequest(job_id="job-1", decision=S.REVIEW_DECISION_CHOOSE_CANDIDATE, candidate=2)
    )
    step = review.apply_review(job, ask, {})
    assert job.state == S.JOB_STATE_RUNNING and job.review_round == 1 and job.review_version == 1
    assert job.best_sample.uri.endswith("s1.png")  # the third ranked sample
    (refine,) = step.new
    assert refine.task_id == "job-1.refine.r1.0"
    assert vqgan_pb2.RefineRequest.FromString(refine.payload).meta.output_prefix == "jobs/job-1/r1/refine"
    # A late result of round 0 is not taken for the re-run.
    stale = vqgan_pb2.RefineResponse(done=True, final_image=img("late"))
    old = pipeline.Task("refine", "job-1.refine.0", b"")
    assert pipeline.apply_event(job, result(old, refine=stale)) is None
    finish_refine(job, "1")
    assert job.state == S.JOB_STATE_AWAITING_REVIEW and job.final_image.uri.endswith("final1.png")
    assert job.reviews[0].final_image.uri == first_final  # the history keeps the first portrait
    assert review.chosen_candidate(job) == 2
    with pytest.raises(InvalidArgument, match="already made from"):
        review.apply_review(job, ask, {})
    with pytest.raises(InvalidArgument, match=r"choose 0\.\.2"):
        review.apply_review(job, jobs_pb2.ReviewRequest(job_id="job-1", decision=5, candidate=7), {})


def test_regenerate_name_asks_for_a_new_one_excluding_the_old() -> None:
    job = awaiting()
    job.spec.reserved_name = "Aoife Byrne"
    ask = jobs_pb2.ReviewRequest(job_id="job-1", decision=S.REVIEW_DECISION_REGENERATE_NAME)
    step = review.apply_review(job, review.validate_request(ask), {})
    (name,) = step.new
    request = text_pb2.NameRequest.FromString(name.payload)
    assert name.task_id == "job-1.name.r1.0" and not request.reserved_name
    assert list(request.exclude_names) == ["Aoife Byrne"] and request.seed == pipeline.ROUND_SEED_STEP
    assert not job.first_name and not job.backstory


def test_versions_states_and_bad_edits() -> None:
    job = awaiting()
    revise = jobs_pb2.ReviewRequest(
        job_id="job-1", decision=S.REVIEW_DECISION_REVISE, backstory="<b>Edited</b>", expected_version=0
    )
    step = review.apply_review(job, review.validate_request(revise), {})
    assert step.new == [] and job.state == S.JOB_STATE_AWAITING_REVIEW and job.backstory == "<b>Edited</b>"
    with pytest.raises(Conflict, match="changed since you loaded it"):
        review.apply_review(job, review.validate_request(revise), {})  # version 0 is stale now
    for bad, message in (
        (
            jobs_pb2.ReviewRequest(job_id="job-1", decision=S.REVIEW_DECISION_REVISE, backstory="x" * 2001),
            "2,000",
        ),
        (
            jobs_pb2.ReviewRequest(job_id="job-1", decision=S.REVIEW_DECISION_REVISE, first_name="A\x00"),
            "control",
        ),
        (jobs_pb2.ReviewRequest(job_id="job-1", decision=S.REVIEW_DECISION_REVISE), "needs first_name"),
        (
            jobs_pb2.ReviewRequest(job_id="job-1", decision=S.REVIEW_DECISION_APPROVE, first_name="X"),
            "takes no",
        ),
        (jobs_pb2.ReviewRequest(job_id="job-1"), "decision is required"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            review.validate_request(bad)
    approve = jobs_pb2.ReviewRequest(job_id="job-1", decision=S.REVIEW_DECISION_APPROVE)
    step = review.apply_review(job, approve, {})
    assert [t.stage for t in step.new] == ["mint"] and job.state == S.JOB_STATE_RUNNING
    with pytest.raises(FailedPrecondition, match="not awaiting review"):
        review.apply_review(job, approve, {})


def test_edited_name_of_a_notable_person_is_refused_with_the_reason() -> None:
    job = awaiting()
    before = job.SerializeToString()
    for first, last, reason in (
        ("Marilyn", "Monroe", "notable: Marilyn Monroe (WordNet: Marilyn Monroe, United States film actress"),
        ("marilyn", "monroe", "not capitalized like a name"),
        ("Mаrilyn", "Monroe", "mixes alphabets"),  # a Cyrillic "а" would dodge the lookup
        ("Marilyn Monroe", "", "not a first and last name"),  # combined with the job's last name
    ):
        for decision in (S.REVIEW_DECISION_EDIT, S.REVIEW_DECISION_REVISE):
            ask = jobs_pb2.ReviewRequest(job_id="job-1", decision=decision, first_name=first, last_name=last)
            with pytest.raises(InvalidArgument, match=re.escape(reason)) as refused:
                review.apply_review(job, review.validate_request(ask), {})
            assert "is refused" in str(refused.value) and "choose another name" in str(refused.value)
            assert job.SerializeToString() == before  # nothing recorded, nothing minted
    # Only the last name edited: the check is on the name the job would carry.
    job.first_name = "Marilyn"
    ask = jobs_pb2.ReviewRequest(job_id="job-1", decision=S.REVIEW_DECISION_EDIT, last_name="Monroe")
    with pytest.raises(InvalidArgument, match="notable: Marilyn Monroe"):
        review.apply_review(job, review.validate_request(ask), {})


def test_edited_name_longer_than_a_generated_one_is_refused() -> None:
    job = awaiting()
    before = job.SerializeToString()
    # Each part fits its own field's limit; together they exceed what the text service may name.
    ask = jobs_pb2.ReviewRequest(
        job_id="job-1", decision=S.REVIEW_DECISION_EDIT, first_name="Annemarie" * 5, last_name="Oakes" * 8
    )
    with pytest.raises(InvalidArgument, match="86 characters, first and last name together may have 80"):
        review.apply_review(job, review.validate_request(ask), {})
    assert job.SerializeToString() == before


def test_edited_name_that_passes_is_applied_and_minted() -> None:
    job = awaiting()
    checked: list[str] = []

    def notability(name: str) -> str | None:
        checked.append(name)
        return None

    ask = jobs_pb2.ReviewRequest(
        job_id="job-1", decision=S.REVIEW_DECISION_EDIT, first_name="Maren", last_name="Quillfeather"
    )
    step = review.apply_review(job, review.validate_request(ask), {}, notability=notability)
    assert checked == ["Maren Quillfeather"] and (job.first_name, job.last_name) == ("Maren", "Quillfeather")
    assert [t.stage for t in step.new] == ["mint"]
    # A backstory-only edit leaves the name alone and is not checked.
    job = awaiting()
    ask = jobs_pb2.ReviewRequest(job_id="job-1", decision=S.REVIEW_DECISION_REVISE, backstory="New.")
    review.apply_review(job, review.validate_request(ask), {}, notability=notability)
    assert checked == ["Maren Quillfeather"]
    # The default check is the text service's offline one, loaded in this process.
    assert review.offline_notability("Maren Quillfeather") is None
    assert "WordNet" in (review.offline_notability("Claude Monet") or "")
