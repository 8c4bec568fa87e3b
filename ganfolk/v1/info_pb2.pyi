from ganfolk.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("service", "version", "ready", "models", "random_weights", "device", "stages", "fallbacks", "chain_id")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    RANDOM_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    service: str
    version: str
    ready: bool
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelRef]
    random_weights: bool
    device: str
    stages: _containers.RepeatedScalarFieldContainer[str]
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    chain_id: int
    def __init__(self, service: _Optional[str] = ..., version: _Optional[str] = ..., ready: _Optional[bool] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelRef, _Mapping]]] = ..., random_weights: _Optional[bool] = ..., device: _Optional[str] = ..., stages: _Optional[_Iterable[str]] = ..., fallbacks: _Optional[_Iterable[str]] = ..., chain_id: _Optional[int] = ...) -> None: ...
