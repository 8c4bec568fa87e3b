from ganfolk.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Augmentations(_message.Message):
    __slots__ = ("hflip_p", "sharpness", "sharpness_p", "affine_degrees", "affine_translate", "affine_p", "perspective_distortion", "perspective_p", "jitter_hue", "jitter_saturation", "jitter_p", "noise_factor", "disabled")
    HFLIP_P_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_P_FIELD_NUMBER: _ClassVar[int]
    AFFINE_DEGREES_FIELD_NUMBER: _ClassVar[int]
    AFFINE_TRANSLATE_FIELD_NUMBER: _ClassVar[int]
    AFFINE_P_FIELD_NUMBER: _ClassVar[int]
    PERSPECTIVE_DISTORTION_FIELD_NUMBER: _ClassVar[int]
    PERSPECTIVE_P_FIELD_NUMBER: _ClassVar[int]
    JITTER_HUE_FIELD_NUMBER: _ClassVar[int]
    JITTER_SATURATION_FIELD_NUMBER: _ClassVar[int]
    JITTER_P_FIELD_NUMBER: _ClassVar[int]
    NOISE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    hflip_p: float
    sharpness: float
    sharpness_p: float
    affine_degrees: float
    affine_translate: float
    affine_p: float
    perspective_distortion: float
    perspective_p: float
    jitter_hue: float
    jitter_saturation: float
    jitter_p: float
    noise_factor: float
    disabled: bool
    def __init__(self, hflip_p: _Optional[float] = ..., sharpness: _Optional[float] = ..., sharpness_p: _Optional[float] = ..., affine_degrees: _Optional[float] = ..., affine_translate: _Optional[float] = ..., affine_p: _Optional[float] = ..., perspective_distortion: _Optional[float] = ..., perspective_p: _Optional[float] = ..., jitter_hue: _Optional[float] = ..., jitter_saturation: _Optional[float] = ..., jitter_p: _Optional[float] = ..., noise_factor: _Optional[float] = ..., disabled: _Optional[bool] = ...) -> None: ...

class RefineParams(_message.Message):
    __slots__ = ("size", "step_size", "iterations", "cutn", "cut_pow", "init_weight", "seed", "snapshot_every", "augmentations")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    CUTN_FIELD_NUMBER: _ClassVar[int]
    CUT_POW_FIELD_NUMBER: _ClassVar[int]
    INIT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_EVERY_FIELD_NUMBER: _ClassVar[int]
    AUGMENTATIONS_FIELD_NUMBER: _ClassVar[int]
    size: int
    step_size: float
    iterations: int
    cutn: int
    cut_pow: float
    init_weight: float
    seed: int
    snapshot_every: int
    augmentations: Augmentations
    def __init__(self, size: _Optional[int] = ..., step_size: _Optional[float] = ..., iterations: _Optional[int] = ..., cutn: _Optional[int] = ..., cut_pow: _Optional[float] = ..., init_weight: _Optional[float] = ..., seed: _Optional[int] = ..., snapshot_every: _Optional[int] = ..., augmentations: _Optional[_Union[Augmentations, _Mapping]] = ...) -> None: ...

class RefineRequest(_message.Message):
    __slots__ = ("init_image", "prompts", "params", "output_prefix", "meta")
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    init_image: _common_pb2.ImageRef
    prompts: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedPrompt]
    params: RefineParams
    output_prefix: str
    meta: _common_pb2.TaskMeta
    def __init__(self, init_image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., prompts: _Optional[_Iterable[_Union[_common_pb2.WeightedPrompt, _Mapping]]] = ..., params: _Optional[_Union[RefineParams, _Mapping]] = ..., output_prefix: _Optional[str] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class RefineResponse(_message.Message):
    __slots__ = ("iteration", "total_iterations", "loss", "snapshot", "done", "final_image", "provenance", "snapshots")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FINAL_IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    total_iterations: int
    loss: float
    snapshot: _common_pb2.ImageRef
    done: bool
    final_image: _common_pb2.ImageRef
    provenance: _common_pb2.Provenance
    snapshots: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    def __init__(self, iteration: _Optional[int] = ..., total_iterations: _Optional[int] = ..., loss: _Optional[float] = ..., snapshot: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., done: _Optional[bool] = ..., final_image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., snapshots: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ...) -> None: ...
