from ganfolk.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedTextsRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedTextsResponse(_message.Message):
    __slots__ = ("embeddings", "dim", "provenance")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    dim: int
    provenance: _common_pb2.Provenance
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., dim: _Optional[int] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class EmbedImagesRequest(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    def __init__(self, images: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ...) -> None: ...

class EmbedImagesResponse(_message.Message):
    __slots__ = ("embeddings", "dim", "provenance")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    dim: int
    provenance: _common_pb2.Provenance
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., dim: _Optional[int] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("prompts", "images", "image_prefix", "top_k", "meta")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedPrompt]
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    image_prefix: str
    top_k: int
    meta: _common_pb2.TaskMeta
    def __init__(self, prompts: _Optional[_Iterable[_Union[_common_pb2.WeightedPrompt, _Mapping]]] = ..., images: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ..., image_prefix: _Optional[str] = ..., top_k: _Optional[int] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class ScoredImage(_message.Message):
    __slots__ = ("image", "score", "index")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    score: float
    index: int
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., score: _Optional[float] = ..., index: _Optional[int] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("ranked", "total", "provenance")
    RANKED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    ranked: _containers.RepeatedCompositeFieldContainer[ScoredImage]
    total: int
    provenance: _common_pb2.Provenance
    def __init__(self, ranked: _Optional[_Iterable[_Union[ScoredImage, _Mapping]]] = ..., total: _Optional[int] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...
