from ganfolk.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SuperResolutionBackend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUPER_RESOLUTION_BACKEND_UNSPECIFIED: _ClassVar[SuperResolutionBackend]
    SUPER_RESOLUTION_BACKEND_AUTO: _ClassVar[SuperResolutionBackend]
    SUPER_RESOLUTION_BACKEND_TORCH_RRDBNET: _ClassVar[SuperResolutionBackend]
    SUPER_RESOLUTION_BACKEND_NCNN_REALESRGAN: _ClassVar[SuperResolutionBackend]
    SUPER_RESOLUTION_BACKEND_LANCZOS: _ClassVar[SuperResolutionBackend]
SUPER_RESOLUTION_BACKEND_UNSPECIFIED: SuperResolutionBackend
SUPER_RESOLUTION_BACKEND_AUTO: SuperResolutionBackend
SUPER_RESOLUTION_BACKEND_TORCH_RRDBNET: SuperResolutionBackend
SUPER_RESOLUTION_BACKEND_NCNN_REALESRGAN: SuperResolutionBackend
SUPER_RESOLUTION_BACKEND_LANCZOS: SuperResolutionBackend

class FinishParams(_message.Message):
    __slots__ = ("vignette_strength", "vignette_radius", "unsharp", "unsharp_radius", "unsharp_percent", "unsharp_threshold", "noise_amount", "noise_seed", "scale", "backend")
    VIGNETTE_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    VIGNETTE_RADIUS_FIELD_NUMBER: _ClassVar[int]
    UNSHARP_FIELD_NUMBER: _ClassVar[int]
    UNSHARP_RADIUS_FIELD_NUMBER: _ClassVar[int]
    UNSHARP_PERCENT_FIELD_NUMBER: _ClassVar[int]
    UNSHARP_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NOISE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    NOISE_SEED_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    vignette_strength: float
    vignette_radius: float
    unsharp: bool
    unsharp_radius: float
    unsharp_percent: int
    unsharp_threshold: int
    noise_amount: float
    noise_seed: int
    scale: int
    backend: SuperResolutionBackend
    def __init__(self, vignette_strength: _Optional[float] = ..., vignette_radius: _Optional[float] = ..., unsharp: _Optional[bool] = ..., unsharp_radius: _Optional[float] = ..., unsharp_percent: _Optional[int] = ..., unsharp_threshold: _Optional[int] = ..., noise_amount: _Optional[float] = ..., noise_seed: _Optional[int] = ..., scale: _Optional[int] = ..., backend: _Optional[_Union[SuperResolutionBackend, str]] = ...) -> None: ...

class FinishRequest(_message.Message):
    __slots__ = ("image", "params", "output_prefix", "inline_result", "meta")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    INLINE_RESULT_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    params: FinishParams
    output_prefix: str
    inline_result: bool
    meta: _common_pb2.TaskMeta
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., params: _Optional[_Union[FinishParams, _Mapping]] = ..., output_prefix: _Optional[str] = ..., inline_result: _Optional[bool] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class FinishResponse(_message.Message):
    __slots__ = ("image", "provenance")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    provenance: _common_pb2.Provenance
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...
