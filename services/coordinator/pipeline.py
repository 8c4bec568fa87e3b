"""The portrait job's state machine, as pure functions over the ``Job`` message.

No NATS, no gRPC: :func:`apply_event` folds a stage event into the job, and
:func:`advance` starts whatever stages have become runnable and returns the tasks to
publish. The engine runs both inside a compare-and-set update of the job's KV entry,
so the functions may run more than once for the same input and must be deterministic.

Flow::

    PROMPT ─┬─ SAMPLE (fan-out) ─ RANK ─ REFINE ─ FINISH ─┬─ REVIEW ─ MINT
            └─ NAME ─ BACKSTORY ───────────────────────────┘
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from ganfolk.v1 import (
    clip_pb2,
    common_pb2,
    events_pb2,
    info_pb2,
    jobs_pb2,
    mint_pb2,
    stylegan_pb2,
    text_pb2,
    upscale_pb2,
    vqgan_pb2,
)

S = jobs_pb2
TERMINAL = {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED, S.JOB_STATE_REJECTED}
STAGE_TASK: dict[int, str] = {  # Stage -> NATS stage name (subject ganfolk.tasks.<name>)
    S.STAGE_PROMPT: "prompts",
    S.STAGE_SAMPLE: "sample",
    S.STAGE_RANK: "rank",
    S.STAGE_REFINE: "refine",
    S.STAGE_FINISH: "finish",
    S.STAGE_NAME: "name",
    S.STAGE_BACKSTORY: "backstory",
    S.STAGE_MINT: "mint",
}
TASK_STAGE: dict[str, int] = {v: k for k, v in STAGE_TASK.items()}
# Service that runs each stage (for skip decisions and error messages).
STAGE_SERVICE: dict[int, str] = {
    S.STAGE_PROMPT: "text",
    S.STAGE_SAMPLE: "stylegan",
    S.STAGE_RANK: "clip",
    S.STAGE_REFINE: "vqgan",
    S.STAGE_FINISH: "upscale",
    S.STAGE_NAME: "text",
    S.STAGE_BACKSTORY: "text",
    S.STAGE_MINT: "mint",
}
# Share of overall progress per stage (sums to 100).
WEIGHT: dict[int, int] = {
    S.STAGE_PROMPT: 5,
    S.STAGE_SAMPLE: 35,
    S.STAGE_RANK: 10,
    S.STAGE_REFINE: 25,
    S.STAGE_FINISH: 10,
    S.STAGE_NAME: 5,
    S.STAGE_BACKSTORY: 5,
    S.STAGE_REVIEW: 0,
    S.STAGE_MINT: 5,
}
DEFAULT_SAMPLES = 1000
DEFAULT_TASK_SIZE = 100
DEFAULT_TOP_K = 14


@dataclass(frozen=True)
class Task:
    stage: str
    task_id: str
    payload: bytes


@dataclass
class Advance:
    """Tasks of stages started by this step, and every task still in flight."""

    new: list[Task]
    inflight: list[Task]


def now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def stage_status(job: jobs_pb2.Job, stage: int) -> jobs_pb2.StageStatus:
    for status in job.stages:
        if status.stage == stage:
            return status
    return job.stages.add(stage=stage, state=S.JOB_STATE_QUEUED)


def has_stage(job: jobs_pb2.Job, stage: int) -> bool:
    return any(s.stage == stage for s in job.stages)


def done(job: jobs_pb2.Job, stage: int) -> bool:
    return has_stage(job, stage) and stage_status(job, stage).state == S.JOB_STATE_SUCCEEDED


def wants_text(job: jobs_pb2.Job) -> bool:
    spec = job.spec
    return spec.name_and_backstory if spec.HasField("name_and_backstory") else True


def describe_person(prompt: str) -> str:
    """'charcoal sketch of an inquisitive Turkish boy' -> 'an inquisitive Turkish boy'."""
    match = re.search(r"\bof\s+(an?\s+.+)$", prompt.strip(), flags=re.IGNORECASE)
    return match.group(1) if match else prompt.strip()


MAX_COLLECTION = 100


def job_id_for_key(key: str) -> str:
    """The job id of an idempotency key: the same key always names the same job."""
    return f"job-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def child_specs(job: jobs_pb2.Job, written: text_pb2.PromptsResponse) -> list[tuple[str, jobs_pb2.JobSpec]]:
    """(idempotency key, spec) of each portrait of a collection, one per written prompt."""
    out = []
    step = job.spec.num_samples or DEFAULT_SAMPLES
    for i, prompt in enumerate(written.prompts):
        spec = jobs_pb2.JobSpec()
        spec.CopyFrom(job.spec)
        spec.collection_size = 0
        spec.prompt = prompt.text
        spec.description = _description(prompt) or describe_person(prompt.text)
        spec.seed = job.spec.seed + i * step
        out.append((f"{job.job_id}.portrait.{i}", spec))
    return out


def _description(p: text_pb2.PortraitPrompt) -> str:
    if not p.person:
        return ""
    article = "an" if p.adjective[:1].lower() in "aeiou" else "a"
    return " ".join(w for w in (article, p.adjective, p.nationality, p.person) if w)


def validate_spec(spec: jobs_pb2.JobSpec, max_samples: int = 10_000) -> None:
    """Reject a spec that can never succeed; the message says what to fix."""
    if spec.collection_size > MAX_COLLECTION:
        raise ValueError(f"collection_size {spec.collection_size} is over the limit of {MAX_COLLECTION}")
    if spec.collection_size and spec.prompt:
        raise ValueError("a collection writes its own prompts: leave prompt empty")
    if len(spec.prompt) > 500:
        raise ValueError(f"prompt is {len(spec.prompt)} characters; keep it under 500")
    if spec.num_samples > max_samples:
        raise ValueError(f"num_samples {spec.num_samples} is over the limit of {max_samples}")
    if spec.sample_task_size > max_samples:
        raise ValueError(f"sample_task_size {spec.sample_task_size} is over the limit of {max_samples}")
    if spec.seed < 0:
        raise ValueError("seed must be >= 0")
    if spec.HasField("truncation_psi") and not 0 <= spec.truncation_psi <= 1:
        raise ValueError(f"truncation_psi must be in [0, 1], got {spec.truncation_psi}")
    n = spec.num_samples or DEFAULT_SAMPLES
    if spec.top_k > n:
        raise ValueError(f"top_k {spec.top_k} is larger than num_samples {n}")
    if spec.recipient and not re.fullmatch(r"0x[0-9a-fA-F]{40}", spec.recipient):
        raise ValueError(f"recipient {spec.recipient!r} is not a 0x-prefixed 20-byte address")


def _meta(
    job: jobs_pb2.Job, stage: str, index: int = 0, count: int = 1, prefix: str = ""
) -> common_pb2.TaskMeta:
    return common_pb2.TaskMeta(
        job_id=job.job_id,
        task_id=f"{job.job_id}.{stage}.{index}",
        stage=stage,
        output_prefix=prefix or f"jobs/{job.job_id}/{stage}",
        shard_index=index,
        shard_count=count,
    )


def _task(meta: common_pb2.TaskMeta, request: Message) -> Task:
    return Task(meta.stage, meta.task_id, request.SerializeToString())


def _prompts(job: jobs_pb2.Job) -> list[common_pb2.WeightedPrompt]:
    return [common_pb2.WeightedPrompt(text=job.prompt, weight=1.0)]


def stage_tasks(job: jobs_pb2.Job, stage: int) -> list[Task]:
    """Every task of a stage (deterministic ids: re-publishing is de-duplicated by JetStream)."""
    spec = job.spec
    name = STAGE_TASK[stage]
    if stage == S.STAGE_PROMPT:
        meta = _meta(job, name)
        count = spec.collection_size or 1
        return [_task(meta, text_pb2.PromptsRequest(count=count, seed=spec.seed, meta=meta))]
    if stage == S.STAGE_SAMPLE:
        n = spec.num_samples or DEFAULT_SAMPLES
        size = spec.sample_task_size or DEFAULT_TASK_SIZE
        shards = math.ceil(n / size)
        tasks = []
        for i in range(shards):
            meta = _meta(job, name, i, shards, prefix=f"jobs/{job.job_id}/samples")
            sample = stylegan_pb2.SampleRequest(
                seed_range=stylegan_pb2.SeedRange(start=spec.seed + i * size, count=min(size, n - i * size)),
                latent_distribution=spec.latent_distribution,
                noise_mode=stylegan_pb2.NOISE_MODE_CONST,
                meta=meta,
            )
            if spec.HasField("truncation_psi"):
                sample.truncation_psi = spec.truncation_psi
            tasks.append(_task(meta, sample))
        return tasks
    if stage == S.STAGE_RANK:
        meta = _meta(job, name)
        rank = clip_pb2.RankRequest(
            prompts=_prompts(job),
            image_prefix=f"jobs/{job.job_id}/samples/",
            top_k=spec.top_k or DEFAULT_TOP_K,
            meta=meta,
        )
        return [_task(meta, rank)]
    if stage == S.STAGE_REFINE:
        meta = _meta(job, name)
        refine = vqgan_pb2.RefineRequest(
            init_image=job.best_sample, prompts=_prompts(job), params=spec.refine, meta=meta
        )
        return [_task(meta, refine)]
    if stage == S.STAGE_FINISH:
        meta = _meta(job, name, prefix=f"jobs/{job.job_id}/final")
        source = job.refined_image if job.refined_image.ByteSize() else job.best_sample
        return [_task(meta, upscale_pb2.FinishRequest(image=source, params=spec.finish, meta=meta))]
    if stage == S.STAGE_NAME:
        meta = _meta(job, name)
        return [_task(meta, text_pb2.NameRequest(description=job.description, seed=spec.seed, meta=meta))]
    if stage == S.STAGE_BACKSTORY:
        meta = _meta(job, name)
        full = f"{job.first_name} {job.last_name}".strip()
        backstory = text_pb2.BackstoryRequest(
            name=full, description=job.description, seed=spec.seed, meta=meta
        )
        return [_task(meta, backstory)]
    if stage == S.STAGE_MINT:
        meta = _meta(job, name)
        person = f"{job.first_name} {job.last_name}".strip()
        title = f"{job.prompt} — {person}" if person else job.prompt
        request = mint_pb2.MintRequest(
            idempotency_key=job.job_id,
            title=title,
            description=job.backstory,
            image=job.final_image,
            recipient=spec.recipient,
            attributes=[mint_pb2.Attribute(trait_type="prompt", value=job.prompt)],
            meta=meta,
        )
        return [_task(meta, request)]
    raise ValueError(f"stage {stage} has no tasks")


def _start(job: jobs_pb2.Job, stage: int, out: Advance) -> None:
    status = stage_status(job, stage)
    status.state = S.JOB_STATE_RUNNING
    status.started_at.CopyFrom(now())
    tasks = stage_tasks(job, stage)
    status.tasks_total = len(tasks)
    out.new.extend(tasks)


def _skip(job: jobs_pb2.Job, stage: int, reason: str) -> None:
    status = stage_status(job, stage)
    status.state = S.JOB_STATE_SUCCEEDED
    status.skipped = True
    status.skip_reason = reason
    status.percent = 100
    status.finished_at.CopyFrom(now())


def random_weights_reason(stage: int, services: dict[str, info_pb2.GetInfoResponse]) -> str:
    service = STAGE_SERVICE[stage]
    info = services.get(service)
    if info is not None and info.random_weights:
        return f"{service} service runs with random weights; skipped (force_stages runs it)"
    return ""


def advance(job: jobs_pb2.Job, services: dict[str, info_pb2.GetInfoResponse] | None = None) -> Advance:
    """Start every stage whose inputs are ready; mark the job done when nothing is left."""
    services = services or {}
    out = Advance([], [])
    if job.state in TERMINAL or job.state == S.JOB_STATE_AWAITING_REVIEW:
        return out
    job.state = S.JOB_STATE_RUNNING

    def ready(stage: int) -> bool:
        return not has_stage(job, stage)

    if job.spec.collection_size:
        # A collection only writes the prompts; its portraits are jobs of their own.
        if ready(S.STAGE_PROMPT):
            _start(job, S.STAGE_PROMPT, out)
        elif done(job, S.STAGE_PROMPT):
            job.state = S.JOB_STATE_SUCCEEDED
        _refresh(job)
        return out

    if not job.prompt and ready(S.STAGE_PROMPT):
        _start(job, S.STAGE_PROMPT, out)
    if job.prompt:
        if not job.description:
            job.description = job.spec.description or describe_person(job.prompt)
        if ready(S.STAGE_SAMPLE):
            _start(job, S.STAGE_SAMPLE, out)
        if wants_text(job) and ready(S.STAGE_NAME):
            _start(job, S.STAGE_NAME, out)
    if done(job, S.STAGE_NAME) and wants_text(job) and ready(S.STAGE_BACKSTORY):
        _start(job, S.STAGE_BACKSTORY, out)
    for stage, after in ((S.STAGE_RANK, S.STAGE_SAMPLE), (S.STAGE_REFINE, S.STAGE_RANK)):
        if done(job, after) and ready(stage):
            reason = "" if job.spec.force_stages else random_weights_reason(stage, services)
            if reason:
                _skip(job, stage, reason)
                if stage == S.STAGE_RANK:  # without ranking, the first sample is the best
                    job.best_sample.CopyFrom(stage_status(job, S.STAGE_SAMPLE).images[0])
            else:
                _start(job, stage, out)
    if done(job, S.STAGE_REFINE) and ready(S.STAGE_FINISH):
        _start(job, S.STAGE_FINISH, out)

    text_done = not wants_text(job) or done(job, S.STAGE_BACKSTORY)
    image_done = done(job, S.STAGE_FINISH)
    if image_done and text_done:
        if job.spec.require_review and ready(S.STAGE_REVIEW):
            status = stage_status(job, S.STAGE_REVIEW)
            status.state = S.JOB_STATE_AWAITING_REVIEW
            status.started_at.CopyFrom(now())
            job.state = S.JOB_STATE_AWAITING_REVIEW
            job.stage = S.STAGE_REVIEW
        elif not job.spec.require_review or done(job, S.STAGE_REVIEW):
            if job.spec.mint and ready(S.STAGE_MINT):
                _start(job, S.STAGE_MINT, out)
            elif not job.spec.mint or done(job, S.STAGE_MINT):
                job.state = S.JOB_STATE_SUCCEEDED
    _refresh(job)
    for status in job.stages:
        if status.state == S.JOB_STATE_RUNNING and status.stage in STAGE_TASK:
            out.inflight.extend(
                t for t in stage_tasks(job, status.stage) if t.task_id not in status.tasks_done
            )
    return out


def _refresh(job: jobs_pb2.Job) -> None:
    running = [s.stage for s in job.stages if s.state in (S.JOB_STATE_RUNNING, S.JOB_STATE_AWAITING_REVIEW)]
    if running:
        job.stage = max(running, key=lambda s: WEIGHT.get(s, 0))
    total = sum(WEIGHT[s] for s in WEIGHT if s != S.STAGE_MINT or job.spec.mint)
    got = sum(WEIGHT.get(s.stage, 0) * s.percent / 100 for s in job.stages)
    job.percent = 100.0 if job.state == S.JOB_STATE_SUCCEEDED else round(100 * got / max(total, 1), 1)


def _finish_stage(status: jobs_pb2.StageStatus) -> None:
    status.state = S.JOB_STATE_SUCCEEDED
    status.percent = 100
    status.finished_at.CopyFrom(now())


def _on_result(
    job: jobs_pb2.Job, stage: int, status: jobs_pb2.StageStatus, result: events_pb2.StageResult
) -> None:
    payload = result.WhichOneof("payload")
    if payload == "prompts" and stage == S.STAGE_PROMPT and job.spec.collection_size:
        if len(result.prompts.prompts) != job.spec.collection_size:
            raise StageError(
                f"asked for {job.spec.collection_size} prompts, got {len(result.prompts.prompts)}"
            )
        job.children.extend(job_id_for_key(key) for key, _ in child_specs(job, result.prompts))
        job.provenance.append(result.prompts.provenance)
    elif payload == "prompts" and stage == S.STAGE_PROMPT:
        chosen = result.prompts.prompts[0]
        job.prompt = chosen.text
        if chosen.person and not job.spec.description:
            article = "an" if chosen.adjective[:1].lower() in "aeiou" else "a"
            job.description = f"{article} {chosen.adjective} {chosen.nationality} {chosen.person}".replace(
                "  ", " "
            )
        job.provenance.append(result.prompts.provenance)
    elif payload == "sample":
        status.images.extend(s.image for s in result.sample.samples)
        job.provenance.append(result.sample.provenance)
    elif payload == "rank":
        ranked = result.rank.ranked
        if not ranked:
            raise StageError("rank returned no images")
        job.best_sample.CopyFrom(ranked[0].image)
        status.images.extend(r.image for r in ranked)
        job.provenance.append(result.rank.provenance)
    elif payload == "refine":
        job.refined_image.CopyFrom(result.refine.final_image)
        job.provenance.append(result.refine.provenance)
    elif payload == "finish":
        job.final_image.CopyFrom(result.finish.image)
        status.images.append(result.finish.image)
        job.provenance.append(result.finish.provenance)
    elif payload == "name":
        job.first_name, job.last_name = result.name.first_name, result.name.last_name
        job.provenance.append(result.name.provenance)
    elif payload == "backstory":
        job.backstory = result.backstory.backstory
        job.provenance.append(result.backstory.provenance)
    elif payload == "mint":
        job.token.CopyFrom(result.mint)
        job.provenance.append(result.mint.provenance)
    else:
        raise StageError(f"unexpected {payload} result for stage {S.Stage.Name(stage)}")


class StageError(RuntimeError):
    """An event that makes the job fail (bad result, permanent task failure)."""


def apply_event(job: jobs_pb2.Job, event: events_pb2.StageEvent) -> jobs_pb2.JobEvent | None:
    """Fold a worker's event into the job; returns the progress event to show watchers.

    Results of a task already recorded are ignored, so a redelivered event is harmless.
    """
    stage = TASK_STAGE.get(event.meta.stage)
    if stage is None or job.state in TERMINAL:
        return None
    status = stage_status(job, stage)
    task_id = event.meta.task_id
    outcome = event.WhichOneof("outcome")
    shown = jobs_pb2.JobEvent(stage=stage, time=event.time)  # type: ignore[arg-type]
    if outcome == "progress":
        span = 100.0 / max(status.tasks_total, 1)
        shown.percent = min(100.0, len(status.tasks_done) * span + event.progress.percent * span / 100)
        shown.message = event.progress.message
        shown.images.extend(event.progress.images)
        return shown
    if task_id in status.tasks_done:
        return None
    if outcome == "failure":
        status.attempts = max(status.attempts, event.attempt)
        status.error = f"{event.failure.code}: {event.failure.message}"
        if event.failure.retryable:
            shown.message = f"retrying after: {status.error}"
            return shown
        fail(job, stage, status.error)
        shown.message = f"failed: {status.error}"
        return shown
    if outcome == "result":
        try:
            _on_result(job, stage, status, event.result)
        except StageError as exc:
            fail(job, stage, str(exc))
            shown.message = f"failed: {exc}"
            return shown
        status.tasks_done.append(task_id)
        status.attempts = max(status.attempts, event.attempt)
        status.percent = 100.0 * len(status.tasks_done) / max(status.tasks_total, 1)
        if len(status.tasks_done) >= status.tasks_total:
            _finish_stage(status)
        shown.percent = status.percent
        label = S.Stage.Name(stage).removeprefix("STAGE_").lower()
        shown.message = f"{label} task {len(status.tasks_done)}/{status.tasks_total} done"
        shown.images.extend(list(status.images)[-1:])
        return shown
    return None


def fail(job: jobs_pb2.Job, stage: int, error: str) -> None:
    status = stage_status(job, stage)
    status.state = S.JOB_STATE_FAILED
    status.error = error
    status.finished_at.CopyFrom(now())
    job.state = S.JOB_STATE_FAILED
    job.stage = stage  # type: ignore[assignment]
    job.error = f"{S.Stage.Name(stage)}: {error}"


def timed_out(
    job: jobs_pb2.Job, timeout_for: Callable[[int], float], now_s: float
) -> tuple[int, float] | None:
    """The first running stage past its timeout, with the timeout."""
    for status in job.stages:
        if status.state == S.JOB_STATE_RUNNING and status.started_at.seconds:
            limit = timeout_for(status.stage)
            if now_s - status.started_at.ToSeconds() > limit:
                return status.stage, limit
    return None
