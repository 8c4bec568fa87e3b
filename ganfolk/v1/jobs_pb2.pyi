import datetime

from ganfolk.v1 import common_pb2 as _common_pb2
from ganfolk.v1 import mint_pb2 as _mint_pb2
from ganfolk.v1 import stylegan_pb2 as _stylegan_pb2
from ganfolk.v1 import text_pb2 as _text_pb2
from ganfolk.v1 import upscale_pb2 as _upscale_pb2
from ganfolk.v1 import vqgan_pb2 as _vqgan_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_AWAITING_REVIEW: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_REJECTED: _ClassVar[JobState]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_PROMPT: _ClassVar[Stage]
    STAGE_SAMPLE: _ClassVar[Stage]
    STAGE_RANK: _ClassVar[Stage]
    STAGE_REFINE: _ClassVar[Stage]
    STAGE_FINISH: _ClassVar[Stage]
    STAGE_NAME: _ClassVar[Stage]
    STAGE_BACKSTORY: _ClassVar[Stage]
    STAGE_REVIEW: _ClassVar[Stage]
    STAGE_MINT: _ClassVar[Stage]

class ReviewDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVIEW_DECISION_UNSPECIFIED: _ClassVar[ReviewDecision]
    REVIEW_DECISION_APPROVE: _ClassVar[ReviewDecision]
    REVIEW_DECISION_EDIT: _ClassVar[ReviewDecision]
    REVIEW_DECISION_REJECT: _ClassVar[ReviewDecision]
    REVIEW_DECISION_REVISE: _ClassVar[ReviewDecision]
    REVIEW_DECISION_CHOOSE_CANDIDATE: _ClassVar[ReviewDecision]
    REVIEW_DECISION_REGENERATE_NAME: _ClassVar[ReviewDecision]
    REVIEW_DECISION_REGENERATE_BACKSTORY: _ClassVar[ReviewDecision]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_AWAITING_REVIEW: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_REJECTED: JobState
STAGE_UNSPECIFIED: Stage
STAGE_PROMPT: Stage
STAGE_SAMPLE: Stage
STAGE_RANK: Stage
STAGE_REFINE: Stage
STAGE_FINISH: Stage
STAGE_NAME: Stage
STAGE_BACKSTORY: Stage
STAGE_REVIEW: Stage
STAGE_MINT: Stage
REVIEW_DECISION_UNSPECIFIED: ReviewDecision
REVIEW_DECISION_APPROVE: ReviewDecision
REVIEW_DECISION_EDIT: ReviewDecision
REVIEW_DECISION_REJECT: ReviewDecision
REVIEW_DECISION_REVISE: ReviewDecision
REVIEW_DECISION_CHOOSE_CANDIDATE: ReviewDecision
REVIEW_DECISION_REGENERATE_NAME: ReviewDecision
REVIEW_DECISION_REGENERATE_BACKSTORY: ReviewDecision

class JobSpec(_message.Message):
    __slots__ = ("prompt", "num_samples", "sample_task_size", "seed", "truncation_psi", "latent_distribution", "top_k", "refine", "finish", "require_review", "mint", "recipient", "name_and_backstory", "force_stages", "description", "collection_size", "collection_filter", "reserved_name", "no_review")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_TASK_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_PSI_FIELD_NUMBER: _ClassVar[int]
    LATENT_DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REFINE_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_REVIEW_FIELD_NUMBER: _ClassVar[int]
    MINT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    NAME_AND_BACKSTORY_FIELD_NUMBER: _ClassVar[int]
    FORCE_STAGES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_SIZE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FILTER_FIELD_NUMBER: _ClassVar[int]
    RESERVED_NAME_FIELD_NUMBER: _ClassVar[int]
    NO_REVIEW_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    num_samples: int
    sample_task_size: int
    seed: int
    truncation_psi: float
    latent_distribution: _stylegan_pb2.LatentDistribution
    top_k: int
    refine: _vqgan_pb2.RefineParams
    finish: _upscale_pb2.FinishParams
    require_review: bool
    mint: bool
    recipient: str
    name_and_backstory: bool
    force_stages: bool
    description: str
    collection_size: int
    collection_filter: _text_pb2.CollectionFilter
    reserved_name: str
    no_review: bool
    def __init__(self, prompt: _Optional[str] = ..., num_samples: _Optional[int] = ..., sample_task_size: _Optional[int] = ..., seed: _Optional[int] = ..., truncation_psi: _Optional[float] = ..., latent_distribution: _Optional[_Union[_stylegan_pb2.LatentDistribution, str]] = ..., top_k: _Optional[int] = ..., refine: _Optional[_Union[_vqgan_pb2.RefineParams, _Mapping]] = ..., finish: _Optional[_Union[_upscale_pb2.FinishParams, _Mapping]] = ..., require_review: _Optional[bool] = ..., mint: _Optional[bool] = ..., recipient: _Optional[str] = ..., name_and_backstory: _Optional[bool] = ..., force_stages: _Optional[bool] = ..., description: _Optional[str] = ..., collection_size: _Optional[int] = ..., collection_filter: _Optional[_Union[_text_pb2.CollectionFilter, _Mapping]] = ..., reserved_name: _Optional[str] = ..., no_review: _Optional[bool] = ...) -> None: ...

class StageStatus(_message.Message):
    __slots__ = ("stage", "state", "percent", "attempts", "error", "started_at", "finished_at", "images", "tasks_total", "tasks_done", "skipped", "skip_reason", "images_total", "manifest_prefix", "scores")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TASKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TASKS_DONE_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    IMAGES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_PREFIX_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    state: JobState
    percent: float
    attempts: int
    error: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    tasks_total: int
    tasks_done: _containers.RepeatedScalarFieldContainer[str]
    skipped: bool
    skip_reason: str
    images_total: int
    manifest_prefix: str
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., percent: _Optional[float] = ..., attempts: _Optional[int] = ..., error: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., images: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ..., tasks_total: _Optional[int] = ..., tasks_done: _Optional[_Iterable[str]] = ..., skipped: _Optional[bool] = ..., skip_reason: _Optional[str] = ..., images_total: _Optional[int] = ..., manifest_prefix: _Optional[str] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "spec", "state", "stage", "percent", "stages", "prompt", "best_sample", "refined_image", "final_image", "first_name", "last_name", "backstory", "token", "error", "provenance", "created_at", "updated_at", "idempotency_key", "description", "children", "parent_id", "reviews", "review_round", "review_version")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    BEST_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    REFINED_IMAGE_FIELD_NUMBER: _ClassVar[int]
    FINAL_IMAGE_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    BACKSTORY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    REVIEW_ROUND_FIELD_NUMBER: _ClassVar[int]
    REVIEW_VERSION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    spec: JobSpec
    state: JobState
    stage: Stage
    percent: float
    stages: _containers.RepeatedCompositeFieldContainer[StageStatus]
    prompt: str
    best_sample: _common_pb2.ImageRef
    refined_image: _common_pb2.ImageRef
    final_image: _common_pb2.ImageRef
    first_name: str
    last_name: str
    backstory: str
    token: _mint_pb2.MintResponse
    error: str
    provenance: _containers.RepeatedCompositeFieldContainer[_common_pb2.Provenance]
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    idempotency_key: str
    description: str
    children: _containers.RepeatedScalarFieldContainer[str]
    parent_id: str
    reviews: _containers.RepeatedCompositeFieldContainer[ReviewRecord]
    review_round: int
    review_version: int
    def __init__(self, job_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., stage: _Optional[_Union[Stage, str]] = ..., percent: _Optional[float] = ..., stages: _Optional[_Iterable[_Union[StageStatus, _Mapping]]] = ..., prompt: _Optional[str] = ..., best_sample: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., refined_image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., final_image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., backstory: _Optional[str] = ..., token: _Optional[_Union[_mint_pb2.MintResponse, _Mapping]] = ..., error: _Optional[str] = ..., provenance: _Optional[_Iterable[_Union[_common_pb2.Provenance, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., description: _Optional[str] = ..., children: _Optional[_Iterable[str]] = ..., parent_id: _Optional[str] = ..., reviews: _Optional[_Iterable[_Union[ReviewRecord, _Mapping]]] = ..., review_round: _Optional[int] = ..., review_version: _Optional[int] = ...) -> None: ...

class ReviewRecord(_message.Message):
    __slots__ = ("decision", "time", "note", "candidate", "first_name", "last_name", "backstory", "best_sample", "refined_image", "final_image", "round")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    BACKSTORY_FIELD_NUMBER: _ClassVar[int]
    BEST_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    REFINED_IMAGE_FIELD_NUMBER: _ClassVar[int]
    FINAL_IMAGE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    decision: ReviewDecision
    time: _timestamp_pb2.Timestamp
    note: str
    candidate: int
    first_name: str
    last_name: str
    backstory: str
    best_sample: _common_pb2.ImageRef
    refined_image: _common_pb2.ImageRef
    final_image: _common_pb2.ImageRef
    round: int
    def __init__(self, decision: _Optional[_Union[ReviewDecision, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., note: _Optional[str] = ..., candidate: _Optional[int] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., backstory: _Optional[str] = ..., best_sample: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., refined_image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., final_image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., round: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("stage", "percent", "message", "images", "time")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    percent: float
    message: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    time: _timestamp_pb2.Timestamp
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., percent: _Optional[float] = ..., message: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    idempotency_key: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("job", "existing")
    JOB_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    job: Job
    existing: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., existing: _Optional[bool] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: JobState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("job", "event")
    JOB_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    job: Job
    event: JobEvent
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., event: _Optional[_Union[JobEvent, _Mapping]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ReviewRequest(_message.Message):
    __slots__ = ("job_id", "decision", "first_name", "last_name", "backstory", "note", "candidate", "expected_version")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    BACKSTORY_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    decision: ReviewDecision
    first_name: str
    last_name: str
    backstory: str
    note: str
    candidate: int
    expected_version: int
    def __init__(self, job_id: _Optional[str] = ..., decision: _Optional[_Union[ReviewDecision, str]] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., backstory: _Optional[str] = ..., note: _Optional[str] = ..., candidate: _Optional[int] = ..., expected_version: _Optional[int] = ...) -> None: ...

class ReviewResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetOutputsRequest(_message.Message):
    __slots__ = ("job_id", "stream", "names")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    stream: bool
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., stream: _Optional[bool] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetOutputsResponse(_message.Message):
    __slots__ = ("name", "filename", "media_type", "size", "sha256", "url", "chunk", "url_expires_at", "offset")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    URL_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    name: str
    filename: str
    media_type: str
    size: int
    sha256: str
    url: str
    chunk: bytes
    url_expires_at: _timestamp_pb2.Timestamp
    offset: int
    def __init__(self, name: _Optional[str] = ..., filename: _Optional[str] = ..., media_type: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., url: _Optional[str] = ..., chunk: _Optional[bytes] = ..., url_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., offset: _Optional[int] = ...) -> None: ...
