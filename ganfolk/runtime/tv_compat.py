"""Let torchvision (and so open_clip) import on a CPU build of torch.

The only torchvision wheel built for torch 2.13 is a CUDA build. With the CPU torch its
compiled extension does not load, and ``import torchvision`` then fails in
``torchvision/_meta_registrations.py`` with "operator torchvision::nms does not exist":
it registers fake (meta) kernels for ``torchvision::nms`` and ``torchvision::qnms``, which
only the compiled extension defines.

Importing this module first defines those two operator schemas (same signatures as the
extension's) when, and only when, torch is a CPU build and the operators are missing. The
import then succeeds; open_clip's transforms and tokenizer work. torchvision's C++ ops
(nms, roi_align, ...) stay unavailable: calling them raises, so nothing here uses them.
"""

from __future__ import annotations

import torch

__all__ = ["PATCHED", "is_cpu_build"]

_SCHEMAS = {
    "torchvision::nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "torchvision::qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def is_cpu_build() -> bool:
    """True for a torch built without CUDA or ROCm."""
    return torch.version.cuda is None and getattr(torch.version, "hip", None) is None


def _has_op(qualname: str) -> bool:
    namespace, name = qualname.split("::")
    try:
        getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _patch() -> list[str]:
    if not is_cpu_build():
        return []
    defined = []
    for qualname, schema in _SCHEMAS.items():
        if not _has_op(qualname):
            torch.library.define(qualname, schema)
            defined.append(qualname)
    return defined


# Operators this process defined (empty on CUDA builds or when torchvision's extension loaded).
PATCHED: list[str] = _patch()
