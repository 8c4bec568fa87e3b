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


def test_skipped_rank_picks_the_lowest_seed_whatever_the_arrival_order() -> None:
    """Without ranking the best sample is the lowest seed's: the same spec gives the same
    portrait whichever shard reports first, and in whatever order a shard lists its seeds."""
    random = {s: info_pb2.GetInfoResponse(service=s, random_weights=True) for s in ("clip", "vqgan")}
    bests = []
    for order in ((0, 1), (1, 0)):
        job = new_job(prompt="x of a y", num_samples=4, sample_task_size=2, seed=40, name_and_backstory=False)
        tasks = pipeline.advance(job, random).new
        shards = [
            stylegan_pb2.SampleResponse(
                samples=[{"seed": 41, "image": img("s41")}, {"seed": 40, "image": img("s40")}]
            ),
            stylegan_pb2.SampleResponse(
                samples=[{"seed": 43, "image": img("s43")}, {"seed": 42, "image": img("s42")}]
            ),
        ]
        for i in order:
            pipeline.apply_event(job, result(tasks[i], sample=shards[i]))
        (finish,) = pipeline.advance(job, random).new
        assert upscale_pb2.FinishRequest.FromString(finish.payload).image.uri == img("s40").uri
        bests.append(job.best_sample)
    assert bests[0] == bests[1] == img("s40")


def test_sample_task_zero_without_images_fails_the_job() -> None:
    job = new_job(prompt="x of a y", num_samples=2, name_and_backstory=False)
    (task,) = pipeline.advance(job).new
    pipeline.apply_event(job, result(task, sample=stylegan_pb2.SampleResponse()))
    assert job.state == S.JOB_STATE_FAILED and "returned no images" in job.error


def test_mint_title_fits_the_mint_limit_and_keeps_the_name() -> None:
    from ganfolk.runtime import limits
    from ganfolk.v1 import mint_pb2

    job = new_job(prompt="oil painting of " + "a very long prompt " * 25, mint=True)
    job.first_name, job.last_name = "Ana", "Silva"
    (task,) = pipeline.stage_tasks(job, S.STAGE_MINT)
    request = mint_pb2.MintRequest.FromString(task.payload)
    assert len(request.title) <= limits.MAX_MINT_TITLE_CHARS
    assert request.title.endswith("… — Ana Silva") and request.prompt == job.prompt


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
        (jobs_pb2.JobSpec(prompt="x" * 600), "prompt is 600 characters; keep it to 500"),
        (jobs_pb2.JobSpec(num_samples=10, top_k=20), "top_k 20 is larger"),
        (jobs_pb2.JobSpec(recipient="0x123"), "not a 0x-prefixed"),
        (jobs_pb2.JobSpec(truncation_psi=2.0), "truncation_psi"),
        (jobs_pb2.JobSpec(num_samples=1_000_000), "over the limit"),
        (jobs_pb2.JobSpec(prompt="a\tb"), r"prompt contains .*'\\t'"),
        (jobs_pb2.JobSpec(prompt="a\x00b"), r"'\\x00'"),
        (jobs_pb2.JobSpec(prompt="a\u2028b"), "LINE SEPARATOR"),
        (jobs_pb2.JobSpec(prompt="   "), "prompt is only whitespace"),
        (jobs_pb2.JobSpec(description="d" * 501), "description is 501 characters; keep it to 500"),
        (jobs_pb2.JobSpec(description="a\nb"), "description contains"),
        (jobs_pb2.JobSpec(reserved_name="n" * 81), "reserved_name is 81 characters; keep it to 80"),
        (jobs_pb2.JobSpec(seed=-1), "seed must be >= 0"),
        (jobs_pb2.JobSpec(seed=2**63 - 999, num_samples=1000), r"use a seed of at most 9223372036854774808"),
        (jobs_pb2.JobSpec(seed=2**63 - 10), r"seed .* \+ 1000 samples runs past 2\*\*63 - 1"),
        (
            jobs_pb2.JobSpec(seed=2**63 - 100, num_samples=10, collection_size=20),
            "20 portraits of 10 samples runs past",
        ),
        (jobs_pb2.JobSpec(latent_distribution=9), "latent_distribution 9 is not one of"),  # type: ignore[arg-type]
        (jobs_pb2.JobSpec(finish={"scale": 3}), "finish.scale must be 1, 2 or 4"),
        (jobs_pb2.JobSpec(finish={"noise_seed": -2}), "finish.noise_seed must be >= 0"),
        (jobs_pb2.JobSpec(finish={"backend": 7}), "finish.backend 7 is not one of"),
        (jobs_pb2.JobSpec(refine={"seed": -3}), "refine.seed must be >= 0"),
        (jobs_pb2.JobSpec(refine={"iterations": 0}), "refine.iterations must be at least 1"),
        (jobs_pb2.JobSpec(require_review=True, no_review=True), "contradict"),
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
    for field in ("description", "reserved_name"):
        spec = jobs_pb2.JobSpec(collection_size=3)
        setattr(spec, field, "x")
        with pytest.raises(InvalidArgument, match=f"writes its own {field}s: leave {field} empty"):
            pipeline.validate_spec(spec)


def test_spec_at_the_limits_is_accepted() -> None:
    from ganfolk.runtime import limits

    for spec in (
        jobs_pb2.JobSpec(seed=2**63 - 1000, num_samples=1000, sample_task_size=1000),  # last seed 2**63 - 1
        jobs_pb2.JobSpec(
            prompt="é" * limits.MAX_PROMPT_CHARS, description="a shy girl 👧", reserved_name="Zoë Ö"
        ),
        jobs_pb2.JobSpec(
            num_samples=limits.MAX_SAMPLES_PER_JOB, sample_task_size=limits.MAX_SEEDS_PER_SAMPLE_TASK
        ),
        jobs_pb2.JobSpec(num_samples=0, top_k=100),  # 0 is the default, 1,000 samples
    ):
        pipeline.validate_spec(spec)
    job = new_job(prompt="x of a y", seed=2**63 - 1000, num_samples=1000, sample_task_size=1000)
    (sample, *_) = pipeline.advance(job).new
    last = stylegan_pb2.SampleRequest.FromString(sample.payload).seed_range
    assert last.start + last.count - 1 == limits.INT64_MAX
    job.review_round = 3  # a regenerated name's seed wraps within int64 instead of overflowing
    (name,) = pipeline.stage_tasks(job, S.STAGE_NAME)
    assert 0 <= text_pb2.NameRequest.FromString(name.payload).seed <= limits.INT64_MAX
