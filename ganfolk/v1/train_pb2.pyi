import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAIN_STATE_UNSPECIFIED: _ClassVar[TrainState]
    TRAIN_STATE_RUNNING: _ClassVar[TrainState]
    TRAIN_STATE_SUCCEEDED: _ClassVar[TrainState]
    TRAIN_STATE_FAILED: _ClassVar[TrainState]
    TRAIN_STATE_CANCELLED: _ClassVar[TrainState]
TRAIN_STATE_UNSPECIFIED: TrainState
TRAIN_STATE_RUNNING: TrainState
TRAIN_STATE_SUCCEEDED: TrainState
TRAIN_STATE_FAILED: TrainState
TRAIN_STATE_CANCELLED: TrainState

class TrainConfigSummary(_message.Message):
    __slots__ = ("size", "batch", "total_kimg", "iterations", "aug", "gamma", "world_size", "start_iter", "dataset", "output", "other")
    class OtherEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_KIMG_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    AUG_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    START_ITER_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    size: int
    batch: int
    total_kimg: float
    iterations: int
    aug: str
    gamma: float
    world_size: int
    start_iter: int
    dataset: str
    output: str
    other: _containers.ScalarMap[str, str]
    def __init__(self, size: _Optional[int] = ..., batch: _Optional[int] = ..., total_kimg: _Optional[float] = ..., iterations: _Optional[int] = ..., aug: _Optional[str] = ..., gamma: _Optional[float] = ..., world_size: _Optional[int] = ..., start_iter: _Optional[int] = ..., dataset: _Optional[str] = ..., output: _Optional[str] = ..., other: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TrainTick(_message.Message):
    __slots__ = ("iteration", "kimg", "total_kimg", "sec_per_kimg", "sec_per_iter", "loss_d", "loss_g", "r1", "path", "real_score", "fake_score", "ada_p", "ada_sign", "mem_gib", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    KIMG_FIELD_NUMBER: _ClassVar[int]
    TOTAL_KIMG_FIELD_NUMBER: _ClassVar[int]
    SEC_PER_KIMG_FIELD_NUMBER: _ClassVar[int]
    SEC_PER_ITER_FIELD_NUMBER: _ClassVar[int]
    LOSS_D_FIELD_NUMBER: _ClassVar[int]
    LOSS_G_FIELD_NUMBER: _ClassVar[int]
    R1_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    FAKE_SCORE_FIELD_NUMBER: _ClassVar[int]
    ADA_P_FIELD_NUMBER: _ClassVar[int]
    ADA_SIGN_FIELD_NUMBER: _ClassVar[int]
    MEM_GIB_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    kimg: float
    total_kimg: float
    sec_per_kimg: float
    sec_per_iter: float
    loss_d: float
    loss_g: float
    r1: float
    path: float
    real_score: float
    fake_score: float
    ada_p: float
    ada_sign: float
    mem_gib: float
    extra: _containers.ScalarMap[str, float]
    def __init__(self, iteration: _Optional[int] = ..., kimg: _Optional[float] = ..., total_kimg: _Optional[float] = ..., sec_per_kimg: _Optional[float] = ..., sec_per_iter: _Optional[float] = ..., loss_d: _Optional[float] = ..., loss_g: _Optional[float] = ..., r1: _Optional[float] = ..., path: _Optional[float] = ..., real_score: _Optional[float] = ..., fake_score: _Optional[float] = ..., ada_p: _Optional[float] = ..., ada_sign: _Optional[float] = ..., mem_gib: _Optional[float] = ..., extra: _Optional[_Mapping[str, float]] = ...) -> None: ...

class TrainSnapshot(_message.Message):
    __slots__ = ("iteration", "checkpoint_uri", "checkpoint_sha256", "grid_uri", "metrics", "kimg")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_URI_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    GRID_URI_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    KIMG_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    checkpoint_uri: str
    checkpoint_sha256: str
    grid_uri: str
    metrics: _containers.ScalarMap[str, float]
    kimg: float
    def __init__(self, iteration: _Optional[int] = ..., checkpoint_uri: _Optional[str] = ..., checkpoint_sha256: _Optional[str] = ..., grid_uri: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., kimg: _Optional[float] = ...) -> None: ...

class TrainStarted(_message.Message):
    __slots__ = ("config", "host")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    config: TrainConfigSummary
    host: str
    def __init__(self, config: _Optional[_Union[TrainConfigSummary, _Mapping]] = ..., host: _Optional[str] = ...) -> None: ...

class TrainFinished(_message.Message):
    __slots__ = ("state", "error")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    state: TrainState
    error: str
    def __init__(self, state: _Optional[_Union[TrainState, str]] = ..., error: _Optional[str] = ...) -> None: ...

class TrainEvent(_message.Message):
    __slots__ = ("run_id", "time", "started", "tick", "snapshot", "finished")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    time: _timestamp_pb2.Timestamp
    started: TrainStarted
    tick: TrainTick
    snapshot: TrainSnapshot
    finished: TrainFinished
    def __init__(self, run_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started: _Optional[_Union[TrainStarted, _Mapping]] = ..., tick: _Optional[_Union[TrainTick, _Mapping]] = ..., snapshot: _Optional[_Union[TrainSnapshot, _Mapping]] = ..., finished: _Optional[_Union[TrainFinished, _Mapping]] = ...) -> None: ...

class TrainRun(_message.Message):
    __slots__ = ("run_id", "state", "config", "host", "started_at", "updated_at", "finished_at", "last_tick", "last_snapshot", "snapshots", "starts", "error")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_TICK_FIELD_NUMBER: _ClassVar[int]
    LAST_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    STARTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: TrainState
    config: TrainConfigSummary
    host: str
    started_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    last_tick: TrainTick
    last_snapshot: TrainSnapshot
    snapshots: int
    starts: int
    error: str
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[TrainState, str]] = ..., config: _Optional[_Union[TrainConfigSummary, _Mapping]] = ..., host: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_tick: _Optional[_Union[TrainTick, _Mapping]] = ..., last_snapshot: _Optional[_Union[TrainSnapshot, _Mapping]] = ..., snapshots: _Optional[int] = ..., starts: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...
