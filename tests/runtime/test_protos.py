"""Request defaults: the rules every service's ops share (output folders: test_outputs.py)."""

from __future__ import annotations

import dataclasses

import pytest

from ganfolk.runtime.protos import optional, set_optionals, with_optionals
from ganfolk.v1 import upscale_pb2, vqgan_pb2


@dataclasses.dataclass(frozen=True)
class Knobs:
    iterations: int = 50
    cutn: int = 64
    step_size: float = 0.01
    not_in_proto: str = "kept"


def test_unset_optionals_keep_the_defaults() -> None:
    assert with_optionals(Knobs(), vqgan_pb2.RefineParams()) == Knobs()


def test_set_optionals_override_even_when_zero() -> None:
    msg = vqgan_pb2.RefineParams(iterations=0, step_size=0.5)
    assert with_optionals(Knobs(cutn=8), msg) == Knobs(iterations=0, cutn=8, step_size=0.5)
    assert set_optionals(msg) == {"iterations": 0, "step_size": 0.5}


def test_message_and_plain_fields_are_not_optionals() -> None:
    # unsharp is a plain bool, augmentations a message: neither is an "optional" knob.
    msg = upscale_pb2.FinishParams(unsharp=True, scale=2)
    assert set_optionals(msg) == {"scale": 2}
    assert set_optionals(vqgan_pb2.RefineParams(augmentations=vqgan_pb2.Augmentations(hflip_p=0.0))) == {}


def test_optional_reads_one_field() -> None:
    msg = vqgan_pb2.RefineParams(cutn=3)
    assert optional(msg, "cutn", 64) == 3
    assert optional(msg, "iterations", 50) == 50
    with pytest.raises(TypeError, match="not a proto3 optional"):
        optional(msg, "augmentations", None)


def test_dataclass_checks_run_on_the_result() -> None:
    from services.upscale.finish import FinishParams

    with pytest.raises(ValueError, match="vignette_strength"):
        with_optionals(FinishParams(), upscale_pb2.FinishParams(vignette_strength=2.0))
