import datetime

from ganfolk.v1 import align_pb2 as _align_pb2
from ganfolk.v1 import clip_pb2 as _clip_pb2
from ganfolk.v1 import common_pb2 as _common_pb2
from ganfolk.v1 import mint_pb2 as _mint_pb2
from ganfolk.v1 import stylegan_pb2 as _stylegan_pb2
from ganfolk.v1 import text_pb2 as _text_pb2
from ganfolk.v1 import upscale_pb2 as _upscale_pb2
from ganfolk.v1 import vqgan_pb2 as _vqgan_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StageEvent(_message.Message):
    __slots__ = ("meta", "time", "attempt", "progress", "result", "failure")
    META_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.TaskMeta
    time: _timestamp_pb2.Timestamp
    attempt: int
    progress: StageProgress
    result: StageResult
    failure: StageFailure
    def __init__(self, meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt: _Optional[int] = ..., progress: _Optional[_Union[StageProgress, _Mapping]] = ..., result: _Optional[_Union[StageResult, _Mapping]] = ..., failure: _Optional[_Union[StageFailure, _Mapping]] = ...) -> None: ...

class StageProgress(_message.Message):
    __slots__ = ("percent", "message", "images")
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    percent: float
    message: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    def __init__(self, percent: _Optional[float] = ..., message: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ...) -> None: ...

class StageFailure(_message.Message):
    __slots__ = ("code", "message", "retryable")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    retryable: bool
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class StageResult(_message.Message):
    __slots__ = ("sample", "rank", "refine", "finish", "prompts", "name", "backstory", "mint", "align_face", "inpaint", "prepare_dataset")
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    REFINE_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKSTORY_FIELD_NUMBER: _ClassVar[int]
    MINT_FIELD_NUMBER: _ClassVar[int]
    ALIGN_FACE_FIELD_NUMBER: _ClassVar[int]
    INPAINT_FIELD_NUMBER: _ClassVar[int]
    PREPARE_DATASET_FIELD_NUMBER: _ClassVar[int]
    sample: _stylegan_pb2.SampleResponse
    rank: _clip_pb2.RankResponse
    refine: _vqgan_pb2.RefineResponse
    finish: _upscale_pb2.FinishResponse
    prompts: _text_pb2.PromptsResponse
    name: _text_pb2.NameResponse
    backstory: _text_pb2.BackstoryResponse
    mint: _mint_pb2.MintResponse
    align_face: _align_pb2.AlignFaceResponse
    inpaint: _align_pb2.InpaintResponse
    prepare_dataset: _align_pb2.PrepareDatasetResponse
    def __init__(self, sample: _Optional[_Union[_stylegan_pb2.SampleResponse, _Mapping]] = ..., rank: _Optional[_Union[_clip_pb2.RankResponse, _Mapping]] = ..., refine: _Optional[_Union[_vqgan_pb2.RefineResponse, _Mapping]] = ..., finish: _Optional[_Union[_upscale_pb2.FinishResponse, _Mapping]] = ..., prompts: _Optional[_Union[_text_pb2.PromptsResponse, _Mapping]] = ..., name: _Optional[_Union[_text_pb2.NameResponse, _Mapping]] = ..., backstory: _Optional[_Union[_text_pb2.BackstoryResponse, _Mapping]] = ..., mint: _Optional[_Union[_mint_pb2.MintResponse, _Mapping]] = ..., align_face: _Optional[_Union[_align_pb2.AlignFaceResponse, _Mapping]] = ..., inpaint: _Optional[_Union[_align_pb2.InpaintResponse, _Mapping]] = ..., prepare_dataset: _Optional[_Union[_align_pb2.PrepareDatasetResponse, _Mapping]] = ...) -> None: ...
