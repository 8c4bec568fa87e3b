"""The coordinator's mint request carries what the metadata and the licence gate need."""

from __future__ import annotations

from ganfolk.runtime.catalog import Stage
from ganfolk.runtime.models import provenance
from ganfolk.v1 import common_pb2, jobs_pb2, mint_pb2
from services.coordinator import pipeline

S = jobs_pb2


def job(reviewed: bool) -> jobs_pb2.Job:
    j = jobs_pb2.Job(job_id="job-abc", prompt="oil portrait of a thoughtful Brazilian girl")
    j.first_name, j.last_name, j.backstory = "Sophia", "Santos", "Sophia collects maps."
    j.best_sample.uri = "file:///objects/jobs/job-abc/samples/seed-1234.png"
    j.final_image.uri = "file:///objects/jobs/job-abc/final/final.png"
    j.provenance.append(provenance("stylegan", [common_pb2.ModelRef(name="g", sha256="aa" * 32)], {}, 0.0))
    if reviewed:
        j.stages.add(stage=S.STAGE_REVIEW, state=S.JOB_STATE_SUCCEEDED)
    return j


def test_mint_request_from_a_reviewed_job() -> None:
    (task,) = pipeline._mint_requests(job(reviewed=True), Stage.MINT)
    request = mint_pb2.MintRequest.FromString(task.payload)
    assert request.prompt == "oil portrait of a thoughtful Brazilian girl"
    assert request.person_name == "Sophia Santos" and request.description == "Sophia collects maps."
    assert request.approved_by_review and request.seed == 1234
    assert [p.service for p in request.provenance] == ["stylegan"]
    assert request.provenance[0].models[0].sha256 == "aa" * 32


def test_mint_request_without_review_is_not_approved() -> None:
    (task,) = pipeline._mint_requests(job(reviewed=False), Stage.MINT)
    assert not mint_pb2.MintRequest.FromString(task.payload).approved_by_review
