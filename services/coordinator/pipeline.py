"""The portrait job's state machine, as pure functions over the ``Job`` message.

No NATS, no gRPC: :func:`apply_event` folds a stage event into the job, and
:func:`advance` starts whatever stages have become runnable and returns the tasks to
publish. The engine runs both inside a compare-and-set update of the job's KV entry,
so the functions may run more than once for the same input and must be deterministic.

Each stage the coordinator dispatches is one row of :data:`STAGES`: its NATS stage (from
the catalog, which also names the service that runs it), the requests of its tasks, and
how a task's result folds into the job. The job stays small whatever the sample count
(a claim check): results that list many images are written to per-task manifest objects
in the store (:func:`manifest_record`, by the engine) and the job keeps counts and a
bounded handful of references.

Flow::

    PROMPT ─┬─ SAMPLE (fan-out) ─ RANK ─ REFINE ─ FINISH ─┬─ REVIEW ─ MINT
            └─ NAME ─ BACKSTORY ───────────────────────────┘
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from ganfolk.runtime import limits
from ganfolk.runtime.catalog import Stage, service_for
from ganfolk.runtime.errors import InvalidArgument
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
from services.text.filters import parse_filter

S = jobs_pb2
TERMINAL = {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED, S.JOB_STATE_REJECTED}
# What a spec's 0 (unset) means: the article's 1,000 samples in tasks of 100, 14 kept.
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


MAX_COLLECTION = limits.MAX_COLLECTION


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
        spec.ClearField("collection_filter")
        # Names are chosen together with the prompts, so that none repeats in the collection.
        spec.reserved_name = f"{prompt.first_name} {prompt.last_name}".strip()
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


def validate_spec(spec: jobs_pb2.JobSpec, max_samples: int = limits.MAX_SAMPLES_PER_JOB) -> None:
    """Reject a spec that can never succeed (InvalidArgument); the message says what to fix.

    Every field is checked here, before the job exists, against the limits the stages would
    otherwise hit after sampling has run (:mod:`ganfolk.runtime.limits`).
    """
    _validate_text(spec)
    _validate_collection(spec)
    n = _validate_samples(spec, max_samples)
    _validate_seeds(spec, n)
    if spec.HasField("truncation_psi") and not 0 <= spec.truncation_psi <= 1:
        raise InvalidArgument(f"truncation_psi must be in [0, 1], got {spec.truncation_psi}")
    if spec.latent_distribution not in stylegan_pb2.LatentDistribution.values():
        kinds = _names(stylegan_pb2.LatentDistribution)
        raise InvalidArgument(f"latent_distribution {spec.latent_distribution} is not one of {kinds}")
    if spec.top_k > n:
        raise InvalidArgument(f"top_k {spec.top_k} is larger than num_samples {n}")
    if spec.top_k > MAX_TOP_K:
        raise InvalidArgument(f"top_k {spec.top_k} is over the limit of {MAX_TOP_K}")
    _validate_images(spec)
    if spec.recipient and not re.fullmatch(r"0x[0-9a-fA-F]{40}", spec.recipient):
        raise InvalidArgument(f"recipient {spec.recipient!r} is not a 0x-prefixed 20-byte address")
    if spec.require_review and spec.no_review:
        raise InvalidArgument("require_review and no_review contradict each other: set one of them")


def _names(enum: Any) -> str:
    return ", ".join(enum.keys())


def _validate_text(spec: jobs_pb2.JobSpec) -> None:
    # The prompt's "of ..." part stands in for an empty description, so the prompt's limit
    # must not exceed the description's, which the name and backstory stages enforce.
    limits.check_line(spec.prompt, "prompt", min(limits.MAX_PROMPT_CHARS, limits.MAX_DESCRIPTION_CHARS))
    limits.check_line(spec.description, "description", limits.MAX_DESCRIPTION_CHARS)
    limits.check_line(spec.reserved_name, "reserved_name", limits.MAX_NAME_CHARS)


def _validate_collection(spec: jobs_pb2.JobSpec) -> None:
    if spec.collection_size > MAX_COLLECTION:
        raise InvalidArgument(f"collection_size {spec.collection_size} is over the limit of {MAX_COLLECTION}")
    if spec.collection_size:
        # The text service writes each portrait's prompt, description and name: a value here
        # would be silently replaced.
        for field in ("prompt", "description", "reserved_name"):
            if getattr(spec, field):
                raise InvalidArgument(f"a collection writes its own {field}s: leave {field} empty")
    if spec.HasField("collection_filter"):
        if not spec.collection_size:
            raise InvalidArgument("collection_filter applies to a collection: set collection_size too")
        parse_filter(spec.collection_filter)


def _validate_samples(spec: jobs_pb2.JobSpec, max_samples: int) -> int:
    """The number of samples the spec draws (0 is the default, :data:`DEFAULT_SAMPLES`)."""
    if spec.num_samples > max_samples:
        raise InvalidArgument(f"num_samples {spec.num_samples} is over the limit of {max_samples}")
    n = spec.num_samples or DEFAULT_SAMPLES
    if n > max_samples:
        raise InvalidArgument(
            f"num_samples 0 means the default of {DEFAULT_SAMPLES}, over this coordinator's limit of "
            f"{max_samples}: set num_samples"
        )
    limit = min(max_samples, MAX_SAMPLE_TASK_SIZE)
    if spec.sample_task_size > limit:
        raise InvalidArgument(
            f"sample_task_size {spec.sample_task_size} is over the limit of {limit} "
            "(seeds one StyleGAN request may ask for)"
        )
    size = spec.sample_task_size or DEFAULT_TASK_SIZE
    tasks = math.ceil(n / size)
    if tasks > MAX_SAMPLE_TASKS:
        raise InvalidArgument(
            f"{n} samples in tasks of {size} make {tasks} sample tasks, over the limit "
            f"of {MAX_SAMPLE_TASKS}: set sample_task_size to at least {math.ceil(n / MAX_SAMPLE_TASKS)}"
        )
    return n


def _validate_seeds(spec: jobs_pb2.JobSpec, n: int) -> None:
    if spec.seed < 0:
        raise InvalidArgument(f"seed must be >= 0, got {spec.seed}")
    # Seeds travel as int64: the job's (or, for a collection, its last portrait's) last seed
    # must fit, or sampling stores images and then fails to report them.
    portraits = max(spec.collection_size, 1)
    last = spec.seed + portraits * n - 1
    if last > limits.INT64_MAX:
        drawn = f"{portraits} portraits of {n} samples" if spec.collection_size else f"{n} samples"
        raise InvalidArgument(
            f"seed {spec.seed} + {drawn} runs past 2**63 - 1 (the largest int64 seed): "
            f"use a seed of at most {limits.INT64_MAX - portraits * n + 1}"
        )


def _validate_images(spec: jobs_pb2.JobSpec) -> None:
    """The refine and finish options the stage services would refuse whatever their settings."""
    if spec.refine.HasField("seed") and spec.refine.seed < 0:
        raise InvalidArgument(f"refine.seed must be >= 0, got {spec.refine.seed}")
    for field in ("size", "iterations", "cutn"):
        if spec.refine.HasField(field) and getattr(spec.refine, field) == 0:
            raise InvalidArgument(f"refine.{field} must be at least 1 (leave it unset for the default)")
    finish = spec.finish
    if finish.HasField("noise_seed") and finish.noise_seed < 0:
        raise InvalidArgument(f"finish.noise_seed must be >= 0, got {finish.noise_seed}")
    if finish.HasField("scale") and finish.scale not in (1, 2, 4):
        raise InvalidArgument(f"finish.scale must be 1, 2 or 4, got {finish.scale}")
    if finish.backend not in upscale_pb2.SuperResolutionBackend.values():
        raise InvalidArgument(
            f"finish.backend {finish.backend} is not one of {_names(upscale_pb2.SuperResolutionBackend)}"
        )


def _meta(
    job: jobs_pb2.Job, stage: str, index: int = 0, count: int = 1, prefix: str = ""
) -> common_pb2.TaskMeta:
    prefix = prefix or f"jobs/{job.job_id}/{stage}"
    task_id = f"{job.job_id}.{stage}.{index}"
    if job.review_round:
        # A stage re-run by a review action: new task ids (JetStream would drop the old ones as
        # duplicates) and its own outputs (the earlier images stay in the job's history).
        task_id = f"{job.job_id}.{stage}.r{job.review_round}.{index}"
        prefix = prefix.replace(f"jobs/{job.job_id}/", f"jobs/{job.job_id}/r{job.review_round}/", 1)
    return common_pb2.TaskMeta(
        job_id=job.job_id,
        task_id=task_id,
        stage=stage,
        output_prefix=prefix,
        shard_index=index,
        shard_count=count,
    )


def current_task(job: jobs_pb2.Job, task_id: str) -> bool:
    """Whether ``task_id`` belongs to the job's current review round (a late event of an
    earlier round must not count as a result of the stage's re-run)."""
    found = re.fullmatch(rf"{re.escape(job.job_id)}\.[a-z_]+\.(?:r(\d+)\.)?\d+", task_id)
    return found is None or int(found.group(1) or 0) == job.review_round


def _task(meta: common_pb2.TaskMeta, request: Message) -> Task:
    return Task(meta.stage, meta.task_id, request.SerializeToString())


def _prompts(job: jobs_pb2.Job) -> list[common_pb2.WeightedPrompt]:
    return [common_pb2.WeightedPrompt(text=job.prompt, weight=1.0)]


# --------------------------------------------------------------------------- the stage table

# The job keeps at most this many references per stage; the rest are in the manifest.
MAX_STAGE_IMAGES = 16
# Bounds that keep the job entry and every NATS message small whatever num_samples is:
# top_k ranked references live in the job, one result event carries one shard's references,
# and the job lists the id of every finished task.
MAX_TOP_K = limits.MAX_TOP_K
MAX_SAMPLE_TASK_SIZE = limits.MAX_SEEDS_PER_SAMPLE_TASK
MAX_SAMPLE_TASKS = limits.MAX_SAMPLE_TASKS


def manifest_prefix(job_id: str, stage: Stage) -> str:
    """Where the per-task manifest objects of a stage live."""
    return f"jobs/{job_id}/manifest/{stage.value}/"


def manifest_key(meta: common_pb2.TaskMeta) -> str:
    """The manifest object of one task: keyed by task id, so a redelivered result overwrites it."""
    return f"{manifest_prefix(meta.job_id, Stage(meta.stage))}{meta.task_id}.json"


def _ref(ref: common_pb2.ImageRef) -> dict[str, Any]:
    return MessageToDict(ref, preserving_proto_field_name=True)


def _sample_requests(job: jobs_pb2.Job, name: Stage) -> list[Task]:
    spec = job.spec
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


def _fold_sample(
    job: jobs_pb2.Job, status: jobs_pb2.StageStatus, r: stylegan_pb2.SampleResponse, meta: common_pb2.TaskMeta
) -> list[common_pb2.ImageRef]:
    status.images_total += len(r.samples)
    if meta.shard_index == 0:
        # Shard 0 holds the lowest seeds: a preview that does not depend on arrival order, and
        # the best sample when ranking is skipped (the lowest seed, so the same spec gives the
        # same portrait). Sorted, since only the seeds, not the order they are listed in, are
        # the service's contract. Its provenance stands for every shard's (same model and
        # parameters); the seed lists are in the manifest.
        if not r.samples:
            raise StageError("sample task 0 returned no images")
        ordered = sorted(r.samples, key=lambda s: s.seed)
        status.images.extend(s.image for s in ordered[:MAX_STAGE_IMAGES])
        provenance = job.provenance.add()
        provenance.CopyFrom(r.provenance)
        provenance.ClearField("seeds")
    return [r.samples[-1].image] if r.samples else []


def _sample_manifest(r: stylegan_pb2.SampleResponse, meta: common_pb2.TaskMeta) -> dict[str, Any]:
    return {
        "images": [{"seed": s.seed, **_ref(s.image)} for s in r.samples],
        "provenance": MessageToDict(r.provenance, preserving_proto_field_name=True),
    }


def _rank_requests(job: jobs_pb2.Job, name: Stage) -> list[Task]:
    meta = _meta(job, name)
    rank = clip_pb2.RankRequest(
        prompts=_prompts(job),
        image_prefix=f"jobs/{job.job_id}/samples/",
        top_k=job.spec.top_k or DEFAULT_TOP_K,
        meta=meta,
    )
    return [_task(meta, rank)]


def _fold_rank(
    job: jobs_pb2.Job, status: jobs_pb2.StageStatus, r: clip_pb2.RankResponse, meta: common_pb2.TaskMeta
) -> list[common_pb2.ImageRef]:
    if not r.ranked:
        raise StageError("rank returned no images")
    if len(r.ranked) > MAX_TOP_K:
        raise StageError(f"rank returned {len(r.ranked)} images, more than the {MAX_TOP_K} asked for at most")
    job.best_sample.CopyFrom(r.ranked[0].image)
    status.images.extend(x.image for x in r.ranked)
    status.scores.extend(x.score for x in r.ranked)
    status.images_total += len(r.ranked)
    job.provenance.append(r.provenance)
    return [r.ranked[0].image]


def _rank_manifest(r: clip_pb2.RankResponse, meta: common_pb2.TaskMeta) -> dict[str, Any]:
    return {
        "scored": r.total,
        "ranked": [
            {"rank": i, "score": x.score, "index": x.index, **_ref(x.image)} for i, x in enumerate(r.ranked)
        ],
        "provenance": MessageToDict(r.provenance, preserving_proto_field_name=True),
    }


def _prompts_requests(job: jobs_pb2.Job, name: Stage) -> list[Task]:
    meta = _meta(job, name)
    count = job.spec.collection_size or 1
    request = text_pb2.PromptsRequest(count=count, seed=job.spec.seed, meta=meta)
    if job.spec.collection_size:
        if job.spec.HasField("collection_filter"):
            request.filter.CopyFrom(job.spec.collection_filter)
        request.with_names = True
    return [_task(meta, request)]


def _fold_prompts(
    job: jobs_pb2.Job, status: jobs_pb2.StageStatus, r: text_pb2.PromptsResponse, meta: common_pb2.TaskMeta
) -> list[common_pb2.ImageRef]:
    if job.spec.collection_size:
        if len(r.prompts) != job.spec.collection_size:
            raise StageError(f"asked for {job.spec.collection_size} prompts, got {len(r.prompts)}")
        job.children.extend(job_id_for_key(key) for key, _ in child_specs(job, r))
    else:
        if not r.prompts:
            raise StageError("the text service wrote no prompt")
        chosen = r.prompts[0]
        job.prompt = chosen.text
        if chosen.person and not job.spec.description:
            job.description = _description(chosen)
    job.provenance.append(r.provenance)
    return []


# Refinement snapshots every this many iterations unless the spec says otherwise: the
# article's 0/25/50 with the default 50 iterations, for reviewers to watch the refinement.
DEFAULT_SNAPSHOT_EVERY = 25


def _refine_requests(job: jobs_pb2.Job, name: Stage) -> list[Task]:
    meta = _meta(job, name)
    params = vqgan_pb2.RefineParams()
    params.CopyFrom(job.spec.refine)
    if not params.HasField("snapshot_every"):
        params.snapshot_every = DEFAULT_SNAPSHOT_EVERY
    refine = vqgan_pb2.RefineRequest(
        init_image=job.best_sample, prompts=_prompts(job), params=params, meta=meta
    )
    return [_task(meta, refine)]


def _fold_refine(
    job: jobs_pb2.Job, status: jobs_pb2.StageStatus, r: vqgan_pb2.RefineResponse, meta: common_pb2.TaskMeta
) -> list[common_pb2.ImageRef]:
    job.refined_image.CopyFrom(r.final_image)
    # The snapshots, then the final image: what a reviewer sees of the refinement.
    status.images.extend(r.snapshots[: MAX_STAGE_IMAGES - 1])
    status.images.append(r.final_image)
    job.provenance.append(r.provenance)
    return [r.final_image]


def _finish_requests(job: jobs_pb2.Job, name: Stage) -> list[Task]:
    meta = _meta(job, name, prefix=f"jobs/{job.job_id}/final")
    source = job.refined_image if job.refined_image.ByteSize() else job.best_sample
    return [_task(meta, upscale_pb2.FinishRequest(image=source, params=job.spec.finish, meta=meta))]


def _fold_finish(
    job: jobs_pb2.Job, status: jobs_pb2.StageStatus, r: upscale_pb2.FinishResponse, meta: common_pb2.TaskMeta
) -> list[common_pb2.ImageRef]:
    job.final_image.CopyFrom(r.image)
    status.images.append(r.image)
    status.images_total += 1
    job.provenance.append(r.provenance)
    return [r.image]


# Seeds of text stages re-run by a review action move by this much per round, so that a
# regenerated name or backstory is a new one.
ROUND_SEED_STEP = 7919


def _text_seed(job: jobs_pb2.Job) -> int:
    # Wraps within int64 (a seed field), so a spec seed near 2**63 still gets new names.
    return (job.spec.seed + job.review_round * ROUND_SEED_STEP) % (limits.INT64_MAX + 1)


def _name_requests(job: jobs_pb2.Job, name: Stage) -> list[Task]:
    meta = _meta(job, name)
    # Names a reviewer asked to replace: never the reserved one again, nor any refused one.
    replaced = [
        f"{r.first_name} {r.last_name}".strip()
        for r in job.reviews
        if r.decision == S.REVIEW_DECISION_REGENERATE_NAME and (r.first_name or r.last_name)
    ]
    request = text_pb2.NameRequest(
        description=job.description,
        seed=_text_seed(job),
        reserved_name="" if replaced else job.spec.reserved_name,
        exclude_names=replaced,
        meta=meta,
    )
    return [_task(meta, request)]


def _fold_name(
    job: jobs_pb2.Job, status: jobs_pb2.StageStatus, r: text_pb2.NameResponse, meta: common_pb2.TaskMeta
) -> list[common_pb2.ImageRef]:
    job.first_name, job.last_name = r.first_name, r.last_name
    job.provenance.append(r.provenance)
    return []


def _backstory_requests(job: jobs_pb2.Job, name: Stage) -> list[Task]:
    meta = _meta(job, name)
    full = f"{job.first_name} {job.last_name}".strip()
    request = text_pb2.BackstoryRequest(
        name=full, description=job.description, seed=_text_seed(job), meta=meta
    )
    return [_task(meta, request)]


def _fold_backstory(
    job: jobs_pb2.Job, status: jobs_pb2.StageStatus, r: text_pb2.BackstoryResponse, meta: common_pb2.TaskMeta
) -> list[common_pb2.ImageRef]:
    job.backstory = r.backstory
    job.provenance.append(r.provenance)
    return []


def _mint_requests(job: jobs_pb2.Job, name: Stage) -> list[Task]:
    meta = _meta(job, name)
    person = f"{job.first_name} {job.last_name}".strip()
    # A prompt may be longer than a token title: shorten the prompt, keep the name (the whole
    # prompt goes in the prompt field and attribute).
    title = limits.fit_title(job.prompt, f" — {person}" if person else "")
    request = mint_pb2.MintRequest(
        idempotency_key=job.job_id,
        title=title,
        description=job.backstory,
        image=job.final_image,
        recipient=job.spec.recipient,
        attributes=[mint_pb2.Attribute(trait_type="prompt", value=job.prompt)],
        prompt=job.prompt,
        person_name=person,
        # The mint service builds the metadata attributes from these records (generator and
        # its sha256, refine iterations, upscaler) and its licence gate reads them.
        provenance=job.provenance,
        # Only an approve or edit decision leaves the review stage succeeded.
        approved_by_review=done(job, S.STAGE_REVIEW),
        meta=meta,
    )
    seed = re.search(r"seed-(-?\d+)\.png$", job.best_sample.uri)
    if seed:
        request.seed = int(seed.group(1))
    return [_task(meta, request)]


def _fold_mint(
    job: jobs_pb2.Job, status: jobs_pb2.StageStatus, r: mint_pb2.MintResponse, meta: common_pb2.TaskMeta
) -> list[common_pb2.ImageRef]:
    job.token.CopyFrom(r)
    job.provenance.append(r.provenance)
    return []


# A result folder: (job, its status for the stage, the result payload, the task) -> images to show.
Fold = Callable[[jobs_pb2.Job, jobs_pb2.StageStatus, Any, common_pb2.TaskMeta], Sequence[common_pb2.ImageRef]]


@dataclass(frozen=True)
class StageDef:
    """How the coordinator runs one stage."""

    stage: int  # jobs_pb2.Stage
    task: Stage  # NATS stage (subject ganfolk.tasks.<task>)
    # Share of the job's overall progress.
    weight: int
    # The StageResult payload field a task of the stage answers with.
    result: str
    requests: Callable[[jobs_pb2.Job, Stage], list[Task]]
    fold: Fold
    # The task's manifest object (JSON-ready), for results that list many images.
    manifest: Callable[[Any, common_pb2.TaskMeta], dict[str, Any]] | None = None

    @property
    def service(self) -> str:
        """The service whose workers run the stage (from the catalog)."""
        return service_for(self.task)


STAGES: dict[int, StageDef] = {
    d.stage: d
    for d in (
        StageDef(S.STAGE_PROMPT, Stage.PROMPTS, 5, "prompts", _prompts_requests, _fold_prompts),
        StageDef(
            S.STAGE_SAMPLE, Stage.SAMPLE, 35, "sample", _sample_requests, _fold_sample, _sample_manifest
        ),
        StageDef(S.STAGE_RANK, Stage.RANK, 10, "rank", _rank_requests, _fold_rank, _rank_manifest),
        StageDef(S.STAGE_REFINE, Stage.REFINE, 25, "refine", _refine_requests, _fold_refine),
        StageDef(S.STAGE_FINISH, Stage.FINISH, 10, "finish", _finish_requests, _fold_finish),
        StageDef(S.STAGE_NAME, Stage.NAME, 5, "name", _name_requests, _fold_name),
        StageDef(S.STAGE_BACKSTORY, Stage.BACKSTORY, 5, "backstory", _backstory_requests, _fold_backstory),
        StageDef(S.STAGE_MINT, Stage.MINT, 5, "mint", _mint_requests, _fold_mint),
    )
}
BY_TASK: dict[str, StageDef] = {d.task.value: d for d in STAGES.values()}
# Share of overall progress per stage (sums to 100); review is a person's, not a task's.
WEIGHT: dict[int, int] = {**{d.stage: d.weight for d in STAGES.values()}, S.STAGE_REVIEW: 0}


def stage_tasks(job: jobs_pb2.Job, stage: int) -> list[Task]:
    """Every task of a stage (deterministic ids: re-publishing is de-duplicated by JetStream)."""
    d = STAGES[stage]
    return d.requests(job, d.task)


def manifest_record(event: events_pb2.StageEvent) -> tuple[str, dict[str, Any]] | None:
    """(key, JSON-ready content) of the manifest object a result event calls for, if any.

    The content depends only on the event, so writing it again for a redelivered event
    leaves the same object.
    """
    d = BY_TASK.get(event.meta.stage)
    if d is None or d.manifest is None or event.WhichOneof("outcome") != "result":
        return None
    if event.result.WhichOneof("payload") != d.result:
        return None
    record = {
        "job_id": event.meta.job_id,
        "stage": d.task.value,
        "task_id": event.meta.task_id,
        "shard_index": event.meta.shard_index,
        **d.manifest(getattr(event.result, d.result), event.meta),
    }
    return manifest_key(event.meta), record


def _on_result(
    job: jobs_pb2.Job, d: StageDef, status: jobs_pb2.StageStatus, event: events_pb2.StageEvent
) -> Sequence[common_pb2.ImageRef]:
    payload = event.result.WhichOneof("payload")
    if payload != d.result:
        raise StageError(f"unexpected {payload} result for stage {S.Stage.Name(d.stage)}")
    return d.fold(job, status, getattr(event.result, d.result), event.meta)


def _start(job: jobs_pb2.Job, stage: int, out: Advance) -> None:
    status = stage_status(job, stage)
    status.state = S.JOB_STATE_RUNNING
    status.started_at.CopyFrom(now())
    tasks = stage_tasks(job, stage)
    status.tasks_total = len(tasks)
    d = STAGES[stage]
    if d.manifest is not None:
        status.manifest_prefix = manifest_prefix(job.job_id, d.task)
    out.new.extend(tasks)


def _skip(job: jobs_pb2.Job, stage: int, reason: str) -> None:
    status = stage_status(job, stage)
    status.state = S.JOB_STATE_SUCCEEDED
    status.skipped = True
    status.skip_reason = reason
    status.percent = 100
    status.finished_at.CopyFrom(now())


def lowest_seed_sample(job: jobs_pb2.Job) -> common_pb2.ImageRef:
    """The best sample when ranking is skipped: the lowest seed's (shard 0 keeps its images
    in seed order), whichever shard reported first."""
    return stage_status(job, S.STAGE_SAMPLE).images[0]


def random_weights_reason(stage: int, services: dict[str, info_pb2.GetInfoResponse]) -> str:
    service = STAGES[stage].service
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
                if stage == S.STAGE_RANK:
                    job.best_sample.CopyFrom(lowest_seed_sample(job))
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
        if status.state == S.JOB_STATE_RUNNING and status.stage in STAGES:
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


class StageError(RuntimeError):
    """An event that makes the job fail (bad result, permanent task failure)."""


def apply_event(job: jobs_pb2.Job, event: events_pb2.StageEvent) -> jobs_pb2.JobEvent | None:
    """Fold a worker's event into the job; returns the progress event to show watchers.

    Results of a task already recorded are ignored, so a redelivered event is harmless.
    """
    d = BY_TASK.get(event.meta.stage)
    if d is None or job.state in TERMINAL:
        return None
    stage = d.stage
    outcome = event.WhichOneof("outcome")
    shown = jobs_pb2.JobEvent(stage=stage, time=event.time)  # type: ignore[arg-type]
    if outcome == "progress":
        # Reads the job only: the engine may pass the copy it keeps for progress snapshots.
        seen = next((s for s in job.stages if s.stage == stage), None)
        total, finished = (seen.tasks_total, len(seen.tasks_done)) if seen else (1, 0)
        span = 100.0 / max(total, 1)
        shown.percent = min(100.0, finished * span + event.progress.percent * span / 100)
        shown.message = event.progress.message
        shown.images.extend(event.progress.images)
        return shown
    task_id = event.meta.task_id
    if not current_task(job, task_id):
        return None
    status = stage_status(job, stage)
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
            images = _on_result(job, d, status, event)
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
        shown.images.extend(images[-1:])
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
