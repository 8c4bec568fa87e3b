"""Reading proto3 ``optional`` fields: the one way a request's unset knobs get their defaults.

A proto3 ``optional`` scalar tells "unset" from zero, so a service can default it. The
defaults live once, as data: a dataclass of parameters whose field defaults are the
documented ones (``RefineParams``, ``FinishParams``, ...), or a setting. These helpers lay
a request's set fields over them, so no ops module repeats a default.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")
T = TypeVar("T")


# ``Any``: the stubs type a message's fields as the pure-Python or the upb descriptor class.
def _optional_scalar(field: Any) -> bool:
    return bool(field.has_presence) and field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE


def set_optionals(msg: Message) -> dict[str, Any]:
    """The presence-tracking scalar fields (proto3 ``optional``) ``msg`` sets, by name."""
    return {
        f.name: getattr(msg, f.name)
        for f in msg.DESCRIPTOR.fields
        if _optional_scalar(f) and msg.HasField(f.name)
    }


def with_optionals(defaults: D, msg: Message) -> D:
    """``defaults`` (a dataclass instance) with each ``optional`` field ``msg`` sets.

    Fields are matched by name; the message's fields the dataclass lacks are ignored, and so
    are its plain (non-optional) fields: a caller maps those itself. The dataclass's own
    ``__post_init__`` checks, if any, run on the result.
    """
    names = {f.name for f in dataclasses.fields(defaults)}
    values = {k: v for k, v in set_optionals(msg).items() if k in names}
    return dataclasses.replace(defaults, **values) if values else defaults


def optional(msg: Message, name: str, default: T) -> T:
    """The value of ``msg``'s ``optional`` field ``name``, or ``default`` when it is unset."""
    if not _optional_scalar(msg.DESCRIPTOR.fields_by_name[name]):
        raise TypeError(f"{msg.DESCRIPTOR.full_name}.{name} is not a proto3 optional scalar field")
    return getattr(msg, name) if msg.HasField(name) else default  # type: ignore[no-any-return]
