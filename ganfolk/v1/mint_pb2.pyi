from ganfolk.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Attribute(_message.Message):
    __slots__ = ("trait_type", "value")
    TRAIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    trait_type: str
    value: str
    def __init__(self, trait_type: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class MintRequest(_message.Message):
    __slots__ = ("idempotency_key", "title", "description", "image", "attributes", "recipient", "prompt", "person_name", "traits", "provenance", "approved_by_review", "seed", "background_color", "meta")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PERSON_NAME_FIELD_NUMBER: _ClassVar[int]
    TRAITS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_REVIEW_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_COLOR_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    title: str
    description: str
    image: _common_pb2.ImageRef
    attributes: _containers.RepeatedCompositeFieldContainer[Attribute]
    recipient: str
    prompt: str
    person_name: str
    traits: PortraitTraits
    provenance: _containers.RepeatedCompositeFieldContainer[_common_pb2.Provenance]
    approved_by_review: bool
    seed: int
    background_color: str
    meta: _common_pb2.TaskMeta
    def __init__(self, idempotency_key: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., attributes: _Optional[_Iterable[_Union[Attribute, _Mapping]]] = ..., recipient: _Optional[str] = ..., prompt: _Optional[str] = ..., person_name: _Optional[str] = ..., traits: _Optional[_Union[PortraitTraits, _Mapping]] = ..., provenance: _Optional[_Iterable[_Union[_common_pb2.Provenance, _Mapping]]] = ..., approved_by_review: _Optional[bool] = ..., seed: _Optional[int] = ..., background_color: _Optional[str] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class PortraitTraits(_message.Message):
    __slots__ = ("nationality", "age", "gender", "medium", "adjective")
    NATIONALITY_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    MEDIUM_FIELD_NUMBER: _ClassVar[int]
    ADJECTIVE_FIELD_NUMBER: _ClassVar[int]
    nationality: str
    age: str
    gender: str
    medium: str
    adjective: str
    def __init__(self, nationality: _Optional[str] = ..., age: _Optional[str] = ..., gender: _Optional[str] = ..., medium: _Optional[str] = ..., adjective: _Optional[str] = ...) -> None: ...

class MintResponse(_message.Message):
    __slots__ = ("token_id", "contract_address", "chain_id", "transaction_hash", "token_uri", "recipient", "already_minted", "provenance", "image_uri", "image_cid", "metadata_cid", "licence_overrides")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_HASH_FIELD_NUMBER: _ClassVar[int]
    TOKEN_URI_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    ALREADY_MINTED_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URI_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CID_FIELD_NUMBER: _ClassVar[int]
    METADATA_CID_FIELD_NUMBER: _ClassVar[int]
    LICENCE_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    contract_address: str
    chain_id: int
    transaction_hash: str
    token_uri: str
    recipient: str
    already_minted: bool
    provenance: _common_pb2.Provenance
    image_uri: str
    image_cid: str
    metadata_cid: str
    licence_overrides: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, token_id: _Optional[str] = ..., contract_address: _Optional[str] = ..., chain_id: _Optional[int] = ..., transaction_hash: _Optional[str] = ..., token_uri: _Optional[str] = ..., recipient: _Optional[str] = ..., already_minted: _Optional[bool] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., image_uri: _Optional[str] = ..., image_cid: _Optional[str] = ..., metadata_cid: _Optional[str] = ..., licence_overrides: _Optional[_Iterable[str]] = ...) -> None: ...

class GetTokenRequest(_message.Message):
    __slots__ = ("token_id", "idempotency_key")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    idempotency_key: str
    def __init__(self, token_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class GetTokenResponse(_message.Message):
    __slots__ = ("token_id", "contract_address", "chain_id", "owner", "token_uri", "name", "description", "image", "attributes", "external_url", "background_color", "uri_frozen")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_URI_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_URL_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_COLOR_FIELD_NUMBER: _ClassVar[int]
    URI_FROZEN_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    contract_address: str
    chain_id: int
    owner: str
    token_uri: str
    name: str
    description: str
    image: str
    attributes: _containers.RepeatedCompositeFieldContainer[Attribute]
    external_url: str
    background_color: str
    uri_frozen: bool
    def __init__(self, token_id: _Optional[str] = ..., contract_address: _Optional[str] = ..., chain_id: _Optional[int] = ..., owner: _Optional[str] = ..., token_uri: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., image: _Optional[str] = ..., attributes: _Optional[_Iterable[_Union[Attribute, _Mapping]]] = ..., external_url: _Optional[str] = ..., background_color: _Optional[str] = ..., uri_frozen: _Optional[bool] = ...) -> None: ...
