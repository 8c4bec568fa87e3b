"""The coordinator's stage table against the catalog and the settings, and the claim check."""

from __future__ import annotations

import math

import pytest

from ganfolk.runtime.catalog import STAGE_SERVICE, Stage
from ganfolk.runtime.settings import ConfigError, load_settings
from ganfolk.v1 import clip_pb2, common_pb2, events_pb2, jobs_pb2, stylegan_pb2, text_pb2
from services.coordinator import pipeline
from services.coordinator.config import TIMEOUT_FIELD, CoordinatorSettings, timeout_field

S = jobs_pb2
# The limit the local and Compose nats-servers keep (nats-server's default max_payload).
NATS_MAX_PAYLOAD = 1 << 20


def test_every_dispatched_stage_is_served_and_has_a_timeout() -> None:
    settings = CoordinatorSettings()
    for d in pipeline.STAGES.values():
        assert d.task in STAGE_SERVICE, f"no service in the catalog runs stage {d.task!r}"
        assert d.service == STAGE_SERVICE[d.task]
        assert settings.timeout_for(d.task) > 0
        # The result payload is a field of StageResult.
        assert d.result in events_pb2.StageResult.DESCRIPTOR.fields_by_name
    assert sum(pipeline.WEIGHT.values()) == 100
    assert set(pipeline.WEIGHT) == set(pipeline.STAGES) | {S.STAGE_REVIEW}


def test_every_timeout_setting_names_a_dispatched_stage() -> None:
    dispatched = {d.task for d in pipeline.STAGES.values()}
    timed = {m["stage"] for name in CoordinatorSettings.model_fields if (m := TIMEOUT_FIELD.fullmatch(name))}
    assert timed == {s.value for s in dispatched}
    assert all(timeout_field(s) in CoordinatorSettings.model_fields for s in dispatched)


def test_a_timeout_variable_for_no_stage_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANFOLK_COORDINATOR_TIMEOUT_RANK_S", "12")
    assert load_settings(CoordinatorSettings).timeout_for(Stage.RANK) == 12
    monkeypatch.setenv("GANFOLK_COORDINATOR_TIMEOUT_SAMPLES_S", "5")  # a typo of SAMPLE
    with pytest.raises(ConfigError, match="GANFOLK_COORDINATOR_TIMEOUT_SAMPLES_S names no stage"):
        load_settings(CoordinatorSettings)
    monkeypatch.delenv("GANFOLK_COORDINATOR_TIMEOUT_SAMPLES_S")
    monkeypatch.setenv("GANFOLK_COORDINATOR_TIMEOUT_ALIGN_S", "5")  # a stage, but not the coordinator's
    with pytest.raises(ConfigError, match="TIMEOUT_ALIGN_S"):
        load_settings(CoordinatorSettings)


def sample_result(job: jobs_pb2.Job, task: pipeline.Task) -> events_pb2.StageEvent:
    request = stylegan_pb2.SampleRequest.FromString(task.payload)
    start, count = request.seed_range.start, request.seed_range.count
    samples = [
        stylegan_pb2.SampledImage(
            seed=seed,
            image=common_pb2.ImageRef(
                uri=f"s3://ganfolk/jobs/{job.job_id}/samples/seed-{seed}.png",
                sha256=f"{seed:064x}",
                width=512,
                height=512,
                media_type="image/png",
            ),
        )
        for seed in range(start, start + count)
    ]
    provenance = common_pb2.Provenance(service="stylegan", seeds=range(start, start + count))
    return events_pb2.StageEvent(
        meta=request.meta,
        attempt=1,
        result=events_pb2.StageResult(
            sample=stylegan_pb2.SampleResponse(samples=samples, provenance=provenance)
        ),
    )


def test_job_stays_small_whatever_the_sample_count() -> None:
    """10,000 samples: the job holds counts and a few references; the manifest holds the rest."""
    job = jobs_pb2.Job(
        job_id="job-0123456789abcdef01234567",
        spec=jobs_pb2.JobSpec(prompt="charcoal sketch of a shy Irish girl", num_samples=10_000, top_k=100),
    )
    job.prompt = job.spec.prompt
    tasks = [t for t in pipeline.advance(job).new if t.stage == Stage.SAMPLE]
    assert len(tasks) == 100
    old_layout = 0  # what the job used to carry: every sample's reference and every shard's seeds
    for task in reversed(tasks):  # arrival order must not matter
        event = sample_result(job, task)
        old_layout += sum(len(s.image.SerializeToString()) + 3 for s in event.result.sample.samples)
        old_layout += event.result.sample.provenance.ByteSize()
        key, record = pipeline.manifest_record(event) or ("", {})
        assert key == f"jobs/{job.job_id}/manifest/sample/{task.task_id}.json"
        assert (
            len(record["images"]) == 100
            and record["images"][0]["seed"] == event.result.sample.samples[0].seed
        )
        pipeline.apply_event(job, event)
        assert pipeline.apply_event(job, event) is None  # a redelivery adds nothing
    sample = pipeline.stage_status(job, S.STAGE_SAMPLE)
    assert sample.state == S.JOB_STATE_SUCCEEDED and sample.images_total == 10_000
    assert len(sample.images) == pipeline.MAX_STAGE_IMAGES and sample.images[0].uri.endswith("seed-0.png")
    assert old_layout > NATS_MAX_PAYLOAD  # the old entry could not have been stored
    ranked = [
        clip_pb2.ScoredImage(image=s.image, score=1 - i / 100, index=i)
        for i, s in enumerate(sample_result(job, tasks[0]).result.sample.samples)
    ]
    rank = next(t for t in pipeline.advance(job).new if t.stage == Stage.RANK)
    meta = clip_pb2.RankRequest.FromString(rank.payload).meta
    rank_event = events_pb2.StageEvent(
        meta=meta, result=events_pb2.StageResult(rank=clip_pb2.RankResponse(ranked=ranked, total=10_000))
    )
    assert (pipeline.manifest_record(rank_event) or ("", {}))[1]["scored"] == 10_000
    pipeline.apply_event(job, rank_event)
    snapshot = jobs_pb2.WatchResponse(job=job, event=jobs_pb2.JobEvent(images=job.stages[0].images[-1:]))
    assert job.ByteSize() < 48_000 and snapshot.ByteSize() < 48_000, job.ByteSize()
    assert math.isclose(pipeline.stage_status(job, S.STAGE_RANK).percent, 100)


def test_results_without_many_images_write_no_manifest() -> None:
    meta = common_pb2.TaskMeta(job_id="job-1", task_id="job-1.name.0", stage="name")
    event = events_pb2.StageEvent(
        meta=meta, result=events_pb2.StageResult(name=text_pb2.NameResponse(first_name="A", last_name="B"))
    )
    assert pipeline.manifest_record(event) is None
    failed = events_pb2.StageEvent(
        meta=common_pb2.TaskMeta(job_id="job-1", task_id="job-1.sample.0", stage="sample"),
        failure=events_pb2.StageFailure(code="INTERNAL", message="x", retryable=True),
    )
    assert pipeline.manifest_record(failed) is None
