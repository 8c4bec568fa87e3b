from ganfolk.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PromptsRequest(_message.Message):
    __slots__ = ("count", "seed", "meta")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    count: int
    seed: int
    meta: _common_pb2.TaskMeta
    def __init__(self, count: _Optional[int] = ..., seed: _Optional[int] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class PortraitPrompt(_message.Message):
    __slots__ = ("text", "medium", "adjective", "nationality", "person")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MEDIUM_FIELD_NUMBER: _ClassVar[int]
    ADJECTIVE_FIELD_NUMBER: _ClassVar[int]
    NATIONALITY_FIELD_NUMBER: _ClassVar[int]
    PERSON_FIELD_NUMBER: _ClassVar[int]
    text: str
    medium: str
    adjective: str
    nationality: str
    person: str
    def __init__(self, text: _Optional[str] = ..., medium: _Optional[str] = ..., adjective: _Optional[str] = ..., nationality: _Optional[str] = ..., person: _Optional[str] = ...) -> None: ...

class PromptsResponse(_message.Message):
    __slots__ = ("prompts", "provenance")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedCompositeFieldContainer[PortraitPrompt]
    provenance: _common_pb2.Provenance
    def __init__(self, prompts: _Optional[_Iterable[_Union[PortraitPrompt, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class NameRequest(_message.Message):
    __slots__ = ("description", "max_attempts", "seed", "meta")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    description: str
    max_attempts: int
    seed: int
    meta: _common_pb2.TaskMeta
    def __init__(self, description: _Optional[str] = ..., max_attempts: _Optional[int] = ..., seed: _Optional[int] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class NameResponse(_message.Message):
    __slots__ = ("first_name", "last_name", "attempts", "rejected", "provenance")
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    first_name: str
    last_name: str
    attempts: int
    rejected: _containers.RepeatedScalarFieldContainer[str]
    provenance: _common_pb2.Provenance
    def __init__(self, first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., attempts: _Optional[int] = ..., rejected: _Optional[_Iterable[str]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class BackstoryRequest(_message.Message):
    __slots__ = ("name", "description", "max_words", "seed", "meta")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MAX_WORDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    max_words: int
    seed: int
    meta: _common_pb2.TaskMeta
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., max_words: _Optional[int] = ..., seed: _Optional[int] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class BackstoryResponse(_message.Message):
    __slots__ = ("backstory", "provenance")
    BACKSTORY_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    backstory: str
    provenance: _common_pb2.Provenance
    def __init__(self, backstory: _Optional[str] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...
