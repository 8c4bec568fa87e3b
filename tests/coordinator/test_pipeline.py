"""The job state machine on its own: stage order, fan-out, duplicates, skips, failures."""

from __future__ import annotations

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.v1 import (
    clip_pb2,
    common_pb2,
    events_pb2,
    info_pb2,
    jobs_pb2,
    stylegan_pb2,
    text_pb2,
    upscale_pb2,
)
from services.coordinator import pipeline

S = jobs_pb2


def new_job(**spec: object) -> jobs_pb2.Job:
    job = jobs_pb2.Job(job_id="job-1", spec=jobs_pb2.JobSpec(**spec))  # type: ignore[arg-type]
    job.prompt = job.spec.prompt
    return job


def result(task: pipeline.Task, **payload: object) -> events_pb2.StageEvent:
    shard = int(task.task_id.rsplit(".", 1)[1])
    meta = common_pb2.TaskMeta(job_id="job-1", task_id=task.task_id, stage=task.stage, shard_index=shard)
    return events_pb2.StageEvent(meta=meta, attempt=1, result=events_pb2.StageResult(**payload))  # type: ignore[arg-type]


def img(name: str) -> common_pb2.ImageRef:
    return common_pb2.ImageRef(uri=f"file:///x/{name}.png", sha256="0" * 64)


def test_prompt_given_starts_sample_fanout_and_name() -> None:
    job = new_job(
        prompt="charcoal sketch of an inquisitive Turkish boy", num_samples=250, sample_task_size=100, seed=7
    )
    step = pipeline.advance(job)
    stages = [t.stage for t in step.new]
    assert stages == ["sample", "sample", "sample", "name"]
    assert job.description == "an inquisitive Turkish boy"
    shards = [stylegan_pb2.SampleRequest.FromString(t.payload) for t in step.new[:3]]
    assert [(s.seed_range.start, s.seed_range.count) for s in shards] == [(7, 100), (107, 100), (207, 50)]
    assert {t.task_id for t in step.new} == {
        "job-1.sample.0",
        "job-1.sample.1",
        "job-1.sample.2",
        "job-1.name.0",
    }
    assert pipeline.advance(job).new == []  # nothing starts twice


def test_fan_in_then_rank_and_duplicate_results_ignored() -> None:
    job = new_job(
        prompt="oil painting of a calm Kenyan woman",
        num_samples=4,
        sample_task_size=2,
        name_and_backstory=False,
    )
    tasks = pipeline.advance(job).new
    first = result(tasks[0], sample=stylegan_pb2.SampleResponse(samples=[{"seed": 0, "image": img("a")}]))
    pipeline.apply_event(job, first)
    assert pipeline.advance(job).new == []
    assert pipeline.apply_event(job, first) is None  # redelivered: no effect
    pipeline.apply_event(
        job, result(tasks[1], sample=stylegan_pb2.SampleResponse(samples=[{"seed": 2, "image": img("b")}]))
    )
    step = pipeline.advance(job)
    assert [t.stage for t in step.new] == ["rank"]
    rank = clip_pb2.RankRequest.FromString(step.new[0].payload)
    assert rank.image_prefix == "jobs/job-1/samples/" and rank.prompts[0].text.startswith("oil painting")
    sample = pipeline.stage_status(job, S.STAGE_SAMPLE)
    assert sample.images_total == 2
    assert [i.uri for i in sample.images] == [img("a").uri]  # shard 0's, whatever the arrival order
    assert sample.manifest_prefix == "jobs/job-1/manifest/sample/"


def test_random_weight_services_are_skipped_and_recorded() -> None:
    job = new_job(
        prompt="a portrait of a young Peruvian man",
        num_samples=2,
        sample_task_size=2,
        name_and_backstory=False,
    )
    sample = pipeline.advance(job).new[0]
    pipeline.apply_event(
        job, result(sample, sample=stylegan_pb2.SampleResponse(samples=[{"seed": 0, "image": img("s0")}]))
    )
    random = {s: info_pb2.GetInfoResponse(service=s, random_weights=True) for s in ("clip", "vqgan")}
    step = pipeline.advance(job, random)
    assert [t.stage for t in step.new] == ["finish"]
    finish = upscale_pb2.FinishRequest.FromString(step.new[0].payload)
    assert finish.image.uri.endswith("s0.png")
    for stage in (S.STAGE_RANK, S.STAGE_REFINE):
        status = pipeline.stage_status(job, stage)
        assert status.skipped and "random weights" in status.skip_reason
    forced = new_job(prompt="x of a y", num_samples=1, name_and_backstory=False, force_stages=True)
    pipeline.apply_event(
        forced,
        result(
            pipeline.advance(forced).new[0],
            sample=stylegan_pb2.SampleResponse(samples=[{"seed": 0, "image": img("s")}]),
        ),
    )
    assert [t.stage for t in pipeline.advance(forced, random).new] == ["rank"]


def test_prompt_written_by_text_service_then_description() -> None:
    job = new_job(seed=3)
    step = pipeline.advance(job)
    assert [t.stage for t in step.new] == ["prompts"]
    written = text_pb2.PromptsResponse(
        prompts=[
            text_pb2.PortraitPrompt(
                text="charcoal sketch of an inquisitive Turkish boy",
                medium="charcoal sketch",
                adjective="inquisitive",
                nationality="Turkish",
                person="boy",
            )
        ]
    )
    pipeline.apply_event(job, result(step.new[0], prompts=written))
    step = pipeline.advance(job)
    assert job.prompt.startswith("charcoal") and job.description == "an inquisitive Turkish boy"
    assert sorted(t.stage for t in step.new) == ["name"] + ["sample"] * 10


def test_permanent_failure_fails_job_and_retryable_does_not() -> None:
    job = new_job(prompt="p of a q", num_samples=1)
    task = pipeline.advance(job).new[0]
    meta = common_pb2.TaskMeta(job_id="job-1", task_id=task.task_id, stage=task.stage)
    retry = events_pb2.StageEvent(
        meta=meta,
        attempt=1,
        failure=events_pb2.StageFailure(code="UNAVAILABLE", message="busy", retryable=True),
    )
    assert "retrying" in pipeline.apply_event(job, retry).message
    assert job.state == S.JOB_STATE_RUNNING
    fatal = events_pb2.StageEvent(
        meta=meta,
        attempt=2,
        failure=events_pb2.StageFailure(code="INVALID_ARGUMENT", message="bad", retryable=False),
    )
    pipeline.apply_event(job, fatal)
    assert job.state == S.JOB_STATE_FAILED and "INVALID_ARGUMENT: bad" in job.error
    assert pipeline.advance(job).new == []


def test_spec_validation_messages() -> None:
    import pytest

    for spec, message in (
        (jobs_pb2.JobSpec(num_samples=10_000, sample_task_size=10), "set sample_task_size to at least 40"),
        (jobs_pb2.JobSpec(sample_task_size=5000), "sample_task_size 5000 is over the limit of 1000"),
        (jobs_pb2.JobSpec(num_samples=1000, top_k=500), "top_k 500 is over the limit of 100"),
        (jobs_pb2.JobSpec(prompt="x" * 600), "under 500"),
        (jobs_pb2.JobSpec(num_samples=10, top_k=20), "top_k 20 is larger"),
        (jobs_pb2.JobSpec(recipient="0x123"), "not a 0x-prefixed"),
        (jobs_pb2.JobSpec(truncation_psi=2.0), "truncation_psi"),
        (jobs_pb2.JobSpec(num_samples=1_000_000), "over the limit"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            pipeline.validate_spec(spec)


def test_collection_writes_prompts_then_lists_one_job_per_prompt() -> None:
    job = new_job(collection_size=2, seed=10, num_samples=50)
    step = pipeline.advance(job)
    assert [t.stage for t in step.new] == ["prompts"]
    assert text_pb2.PromptsRequest.FromString(step.new[0].payload).count == 2
    written = text_pb2.PromptsResponse(
        prompts=[
            text_pb2.PortraitPrompt(
                text="oil painting of a calm Kenyan woman",
                medium="oil painting",
                adjective="calm",
                nationality="Kenyan",
                person="woman",
            ),
            text_pb2.PortraitPrompt(
                text="charcoal sketch of an elderly Peruvian man",
                medium="charcoal sketch",
                adjective="elderly",
                nationality="Peruvian",
                person="man",
            ),
        ]
    )
    specs = pipeline.child_specs(job, written)
    assert [s.prompt for _, s in specs] == [p.text for p in written.prompts]
    assert [s.seed for _, s in specs] == [10, 60] and all(s.collection_size == 0 for _, s in specs)
    assert specs[1][1].description == "an elderly Peruvian man"
    pipeline.apply_event(job, result(step.new[0], prompts=written))
    pipeline.advance(job)
    assert job.state == S.JOB_STATE_SUCCEEDED
    assert list(job.children) == [pipeline.job_id_for_key(key) for key, _ in specs]


def test_collection_validation() -> None:
    import pytest

    with pytest.raises(ValueError, match="leave prompt empty"):
        pipeline.validate_spec(jobs_pb2.JobSpec(collection_size=3, prompt="x"))
    with pytest.raises(ValueError, match="over the limit of 100"):
        pipeline.validate_spec(jobs_pb2.JobSpec(collection_size=101))
