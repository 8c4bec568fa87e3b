from ganfolk.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LatentDistribution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LATENT_DISTRIBUTION_UNSPECIFIED: _ClassVar[LatentDistribution]
    LATENT_DISTRIBUTION_NORMAL: _ClassVar[LatentDistribution]
    LATENT_DISTRIBUTION_TRUNCATED_NORMAL: _ClassVar[LatentDistribution]

class NoiseMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOISE_MODE_UNSPECIFIED: _ClassVar[NoiseMode]
    NOISE_MODE_CONST: _ClassVar[NoiseMode]
    NOISE_MODE_RANDOM: _ClassVar[NoiseMode]
LATENT_DISTRIBUTION_UNSPECIFIED: LatentDistribution
LATENT_DISTRIBUTION_NORMAL: LatentDistribution
LATENT_DISTRIBUTION_TRUNCATED_NORMAL: LatentDistribution
NOISE_MODE_UNSPECIFIED: NoiseMode
NOISE_MODE_CONST: NoiseMode
NOISE_MODE_RANDOM: NoiseMode

class SeedList(_message.Message):
    __slots__ = ("seeds",)
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    seeds: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, seeds: _Optional[_Iterable[int]] = ...) -> None: ...

class SeedRange(_message.Message):
    __slots__ = ("start", "count")
    START_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    start: int
    count: int
    def __init__(self, start: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("seed_list", "seed_range", "truncation_psi", "latent_distribution", "truncation_bound", "noise_mode", "batch_size", "return_latents", "inline_images", "output_prefix", "meta")
    SEED_LIST_FIELD_NUMBER: _ClassVar[int]
    SEED_RANGE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_PSI_FIELD_NUMBER: _ClassVar[int]
    LATENT_DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_BOUND_FIELD_NUMBER: _ClassVar[int]
    NOISE_MODE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    RETURN_LATENTS_FIELD_NUMBER: _ClassVar[int]
    INLINE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    seed_list: SeedList
    seed_range: SeedRange
    truncation_psi: float
    latent_distribution: LatentDistribution
    truncation_bound: float
    noise_mode: NoiseMode
    batch_size: int
    return_latents: bool
    inline_images: bool
    output_prefix: str
    meta: _common_pb2.TaskMeta
    def __init__(self, seed_list: _Optional[_Union[SeedList, _Mapping]] = ..., seed_range: _Optional[_Union[SeedRange, _Mapping]] = ..., truncation_psi: _Optional[float] = ..., latent_distribution: _Optional[_Union[LatentDistribution, str]] = ..., truncation_bound: _Optional[float] = ..., noise_mode: _Optional[_Union[NoiseMode, str]] = ..., batch_size: _Optional[int] = ..., return_latents: _Optional[bool] = ..., inline_images: _Optional[bool] = ..., output_prefix: _Optional[str] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class SampledImage(_message.Message):
    __slots__ = ("seed", "image", "w_latent")
    SEED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    W_LATENT_FIELD_NUMBER: _ClassVar[int]
    seed: int
    image: _common_pb2.ImageRef
    w_latent: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, seed: _Optional[int] = ..., image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., w_latent: _Optional[_Iterable[float]] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("samples", "provenance")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[SampledImage]
    provenance: _common_pb2.Provenance
    def __init__(self, samples: _Optional[_Iterable[_Union[SampledImage, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...
