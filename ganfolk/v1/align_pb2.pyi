from ganfolk.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FaceDetector(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FACE_DETECTOR_UNSPECIFIED: _ClassVar[FaceDetector]
    FACE_DETECTOR_HOG: _ClassVar[FaceDetector]
    FACE_DETECTOR_CNN: _ClassVar[FaceDetector]

class FaceSelection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FACE_SELECTION_UNSPECIFIED: _ClassVar[FaceSelection]
    FACE_SELECTION_LARGEST: _ClassVar[FaceSelection]
    FACE_SELECTION_ALL: _ClassVar[FaceSelection]

class InpaintMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INPAINT_METHOD_UNSPECIFIED: _ClassVar[InpaintMethod]
    INPAINT_METHOD_AUTO: _ClassVar[InpaintMethod]
    INPAINT_METHOD_LAMA: _ClassVar[InpaintMethod]
    INPAINT_METHOD_TELEA: _ClassVar[InpaintMethod]
FACE_DETECTOR_UNSPECIFIED: FaceDetector
FACE_DETECTOR_HOG: FaceDetector
FACE_DETECTOR_CNN: FaceDetector
FACE_SELECTION_UNSPECIFIED: FaceSelection
FACE_SELECTION_LARGEST: FaceSelection
FACE_SELECTION_ALL: FaceSelection
INPAINT_METHOD_UNSPECIFIED: InpaintMethod
INPAINT_METHOD_AUTO: InpaintMethod
INPAINT_METHOD_LAMA: InpaintMethod
INPAINT_METHOD_TELEA: InpaintMethod

class AlignParams(_message.Message):
    __slots__ = ("output_size", "looseness", "detector", "selection", "inpaint", "inpaint_method")
    OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOOSENESS_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    INPAINT_FIELD_NUMBER: _ClassVar[int]
    INPAINT_METHOD_FIELD_NUMBER: _ClassVar[int]
    output_size: int
    looseness: float
    detector: FaceDetector
    selection: FaceSelection
    inpaint: bool
    inpaint_method: InpaintMethod
    def __init__(self, output_size: _Optional[int] = ..., looseness: _Optional[float] = ..., detector: _Optional[_Union[FaceDetector, str]] = ..., selection: _Optional[_Union[FaceSelection, str]] = ..., inpaint: _Optional[bool] = ..., inpaint_method: _Optional[_Union[InpaintMethod, str]] = ...) -> None: ...

class AlignFaceRequest(_message.Message):
    __slots__ = ("image", "params", "output_prefix", "inline_result", "meta")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    INLINE_RESULT_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    params: AlignParams
    output_prefix: str
    inline_result: bool
    meta: _common_pb2.TaskMeta
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., params: _Optional[_Union[AlignParams, _Mapping]] = ..., output_prefix: _Optional[str] = ..., inline_result: _Optional[bool] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("left", "top", "right", "bottom")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    left: float
    top: float
    right: float
    bottom: float
    def __init__(self, left: _Optional[float] = ..., top: _Optional[float] = ..., right: _Optional[float] = ..., bottom: _Optional[float] = ...) -> None: ...

class AlignedFace(_message.Message):
    __slots__ = ("image", "mask", "landmarks", "face_box", "rotation_degrees")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    FACE_BOX_FIELD_NUMBER: _ClassVar[int]
    ROTATION_DEGREES_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    mask: _common_pb2.ImageRef
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    face_box: Box
    rotation_degrees: float
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., mask: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., face_box: _Optional[_Union[Box, _Mapping]] = ..., rotation_degrees: _Optional[float] = ...) -> None: ...

class AlignFaceResponse(_message.Message):
    __slots__ = ("faces", "provenance")
    FACES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[AlignedFace]
    provenance: _common_pb2.Provenance
    def __init__(self, faces: _Optional[_Iterable[_Union[AlignedFace, _Mapping]]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class InpaintRequest(_message.Message):
    __slots__ = ("image", "mask", "method", "output_prefix", "inline_result", "meta")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    INLINE_RESULT_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    mask: _common_pb2.ImageRef
    method: InpaintMethod
    output_prefix: str
    inline_result: bool
    meta: _common_pb2.TaskMeta
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., mask: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., method: _Optional[_Union[InpaintMethod, str]] = ..., output_prefix: _Optional[str] = ..., inline_result: _Optional[bool] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class InpaintResponse(_message.Message):
    __slots__ = ("image", "provenance")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageRef
    provenance: _common_pb2.Provenance
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class PrepareDatasetRequest(_message.Message):
    __slots__ = ("source", "destination", "params", "meta")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    source: str
    destination: str
    params: AlignParams
    meta: _common_pb2.TaskMeta
    def __init__(self, source: _Optional[str] = ..., destination: _Optional[str] = ..., params: _Optional[_Union[AlignParams, _Mapping]] = ..., meta: _Optional[_Union[_common_pb2.TaskMeta, _Mapping]] = ...) -> None: ...

class PrepareDatasetResponse(_message.Message):
    __slots__ = ("total", "processed", "skipped", "current", "manifest_uri", "done")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_URI_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    total: int
    processed: int
    skipped: int
    current: str
    manifest_uri: str
    done: bool
    def __init__(self, total: _Optional[int] = ..., processed: _Optional[int] = ..., skipped: _Optional[int] = ..., current: _Optional[str] = ..., manifest_uri: _Optional[str] = ..., done: _Optional[bool] = ...) -> None: ...
