import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageRef(_message.Message):
    __slots__ = ("uri", "inline_data", "sha256", "width", "height", "media_type")
    URI_FIELD_NUMBER: _ClassVar[int]
    INLINE_DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    uri: str
    inline_data: bytes
    sha256: str
    width: int
    height: int
    media_type: str
    def __init__(self, uri: _Optional[str] = ..., inline_data: _Optional[bytes] = ..., sha256: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., media_type: _Optional[str] = ...) -> None: ...

class WeightedPrompt(_message.Message):
    __slots__ = ("text", "weight")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    text: str
    weight: float
    def __init__(self, text: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "source", "sha256", "random_weights")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    RANDOM_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    sha256: str
    random_weights: bool
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., sha256: _Optional[str] = ..., random_weights: _Optional[bool] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("service", "service_version", "models", "seeds", "parameters", "fallbacks", "device", "created_at", "duration_seconds")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    service: str
    service_version: str
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    seeds: _containers.RepeatedScalarFieldContainer[int]
    parameters: _struct_pb2.Struct
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    device: str
    created_at: _timestamp_pb2.Timestamp
    duration_seconds: float
    def __init__(self, service: _Optional[str] = ..., service_version: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., seeds: _Optional[_Iterable[int]] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., fallbacks: _Optional[_Iterable[str]] = ..., device: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class TaskMeta(_message.Message):
    __slots__ = ("job_id", "task_id", "stage", "output_prefix", "shard_index", "shard_count")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    SHARD_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_id: str
    stage: str
    output_prefix: str
    shard_index: int
    shard_count: int
    def __init__(self, job_id: _Optional[str] = ..., task_id: _Optional[str] = ..., stage: _Optional[str] = ..., output_prefix: _Optional[str] = ..., shard_index: _Optional[int] = ..., shard_count: _Optional[int] = ...) -> None: ...
