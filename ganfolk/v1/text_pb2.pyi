from ganfolk.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PromptsRequest(_message.Message):
    __slots__ = ("count", "seed", "filter", "with_names", "meta")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WITH_NAMES_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    count: int
    seed: int
    filter: CollectionFilter
    with_names: bool
    meta: _common_pb2.TaskMeta
    def __init__(self, count: _Optional[int] = ..., seed: _Optional[int] = ..., filter: _Optional[_Union[CollectionFilter, _Mapping]] = ..., with_names: _Optional[bool] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class CollectionFilter(_message.Message):
    __slots__ = ("nationalities", "age_groups", "genders", "media")
    NATIONALITIES_FIELD_NUMBER: _ClassVar[int]
    AGE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    GENDERS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    nationalities: _containers.RepeatedScalarFieldContainer[str]
    age_groups: _containers.RepeatedScalarFieldContainer[str]
    genders: _containers.RepeatedScalarFieldContainer[str]
    media: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, nationalities: _Optional[_Iterable[str]] = ..., age_groups: _Optional[_Iterable[str]] = ..., genders: _Optional[_Iterable[str]] = ..., media: _Optional[_Iterable[str]] = ...) -> None: ...

class PortraitPrompt(_message.Message):
    __slots__ = ("text", "medium", "adjective", "nationality", "person", "country_code", "gender", "age_group", "first_name", "last_name")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MEDIUM_FIELD_NUMBER: _ClassVar[int]
    ADJECTIVE_FIELD_NUMBER: _ClassVar[int]
    NATIONALITY_FIELD_NUMBER: _ClassVar[int]
    PERSON_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    AGE_GROUP_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    text: str
    medium: str
    adjective: str
    nationality: str
    person: str
    country_code: str
    gender: str
    age_group: str
    first_name: str
    last_name: str
    def __init__(self, text: _Optional[str] = ..., medium: _Optional[str] = ..., adjective: _Optional[str] = ..., nationality: _Optional[str] = ..., person: _Optional[str] = ..., country_code: _Optional[str] = ..., gender: _Optional[str] = ..., age_group: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ...) -> None: ...

class PromptsResponse(_message.Message):
    __slots__ = ("prompts", "provenance")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedCompositeFieldContainer[PortraitPrompt]
    provenance: _common_pb2.Provenance
    def __init__(self, prompts: _Optional[_Iterable[_Union[PortraitPrompt, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class NameRequest(_message.Message):
    __slots__ = ("description", "max_attempts", "seed", "exclude_names", "reserved_name", "meta")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_NAMES_FIELD_NUMBER: _ClassVar[int]
    RESERVED_NAME_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    description: str
    max_attempts: int
    seed: int
    exclude_names: _containers.RepeatedScalarFieldContainer[str]
    reserved_name: str
    meta: _common_pb2.TaskMeta
    def __init__(self, description: _Optional[str] = ..., max_attempts: _Optional[int] = ..., seed: _Optional[int] = ..., exclude_names: _Optional[_Iterable[str]] = ..., reserved_name: _Optional[str] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class NameResponse(_message.Message):
    __slots__ = ("first_name", "last_name", "attempts", "rejected", "provenance", "country_code", "gender")
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    first_name: str
    last_name: str
    attempts: int
    rejected: _containers.RepeatedScalarFieldContainer[str]
    provenance: _common_pb2.Provenance
    country_code: str
    gender: str
    def __init__(self, first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., attempts: _Optional[int] = ..., rejected: _Optional[_Iterable[str]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., country_code: _Optional[str] = ..., gender: _Optional[str] = ...) -> None: ...

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
