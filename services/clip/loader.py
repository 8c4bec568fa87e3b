"""The one place that loads open_clip models; the CLIP and VQGAN services both use it.

``load_clip`` builds an open_clip architecture by name with ``pretrained=None`` (never a
hub download) and loads the weights from a checkpoint file or object-store URI, verified
against its sha256. The returned model is in eval mode with frozen parameters, fp16 on
CUDA and fp32 on CPU, with the preprocessing open_clip uses for that model at inference
(resize, centre crop, mean/std) and its tokenizer.

Checkpoints in open_clip's formats load: a plain state dict, a training checkpoint with a
``state_dict`` entry (``module.`` prefixes are stripped), ``.safetensors``, and OpenAI's
TorchScript ``.pt`` (open_clip converts them). Without a checkpoint, random weights are used
only when ``allow_random=True`` (demo/test mode); the :class:`~ganfolk.v1.common_pb2.ModelRef`
then says ``random_weights=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# isort: off
from ganfolk.runtime import tv_compat  # noqa: F401  (must precede open_clip: it imports torchvision)
import open_clip
from open_clip.transform import PreprocessCfg, image_transform_v2

# isort: on
from ganfolk.runtime.models import fetch_weights, model_ref
from ganfolk.runtime.settings import ConfigError, Settings
from ganfolk.v1 import common_pb2

__all__ = ["LoadedClip", "image_size_of", "load_clip", "register_model_config"]

log = logging.getLogger(__name__)


@dataclass
class LoadedClip:
    """A loaded model; unpacks as ``model, preprocess, tokenizer = load_clip(...)``."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    model_name: str
    device: str
    dtype: torch.dtype
    ref: common_pb2.ModelRef
    # open_clip's inference preprocessing parameters (size, mean, std, interpolation, resize_mode).
    preprocess_cfg: dict[str, Any]
    context_length: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.preprocess, self.tokenizer))

    @property
    def random_weights(self) -> bool:
        return bool(self.ref.random_weights)


def register_model_config(path: str | Path) -> str:
    """Register an open_clip JSON model config (file stem = model name); returns the name."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"open_clip model config not found: {p} (GANFOLK_CLIP_MODEL_CONFIG)")
    open_clip.add_model_config(p)
    return p.stem


def image_size_of(cfg: dict[str, Any]) -> tuple[int, int]:
    size = cfg.get("size", 224)
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def _model_config(model_name: str) -> dict[str, Any]:
    if model_name.startswith(("hf-hub:", "local-dir:")) or ":" in model_name:
        raise ConfigError(
            f"GANFOLK_CLIP_MODEL={model_name!r}: hub and directory schemas are not supported (no model hub "
            "is reachable); give an open_clip architecture name and a checkpoint file in "
            "GANFOLK_CLIP_CHECKPOINT"
        )
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        known = ", ".join(m for m in open_clip.list_models() if m.startswith(("ViT-", "RN")))
        raise ConfigError(
            f"GANFOLK_CLIP_MODEL={model_name!r} is not an open_clip architecture; use one of: {known} "
            "(or register a JSON config with GANFOLK_CLIP_MODEL_CONFIG)"
        )
    text_cfg = cfg.get("text_cfg", {})
    if "hf_tokenizer_name" in text_cfg or "hf_model_name" in text_cfg:
        raise ConfigError(
            f"GANFOLK_CLIP_MODEL={model_name!r} needs a Hugging Face text tower or tokenizer, which would be "
            "downloaded from the hub; choose a CLIP architecture with the built-in tokenizer (e.g. ViT-B-32)"
        )
    return dict(cfg)


def load_clip(
    model_name: str = "ViT-B-32",
    checkpoint: str | None = None,
    device: str = "cpu",
    sha256: str | None = None,
    allow_random: bool = False,
    *,
    settings: Settings | None = None,
    model_config: str | Path | None = None,
    variable: str = "GANFOLK_CLIP_CHECKPOINT",
) -> LoadedClip:
    """Load an open_clip model for inference.

    Args:
        model_name: open_clip architecture (``open_clip.list_models()``), e.g. ``"ViT-B-32"``.
        checkpoint: path, ``file://`` or ``s3://`` URI of the weights; None only with ``allow_random``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... (fp16 on CUDA, fp32 elsewhere).
        sha256: expected hex digest of the checkpoint file, checked before it is unpickled.
        allow_random: permit random weights when ``checkpoint`` is None (demo/test mode).
        settings: where object-store credentials and the weights cache dir come from.
        model_config: an open_clip JSON config to register first (its file stem is its name).
        variable: the setting named in error messages about the checkpoint.

    Raises:
        ConfigError: unknown architecture, hub-only model, or no checkpoint without ``allow_random``.
        FileNotFoundError: the checkpoint does not exist.
        ValueError: checksum mismatch, or the checkpoint does not fit the architecture.
    """
    if model_config is not None:
        register_model_config(model_config)
    _model_config(model_name)
    if checkpoint is None and not allow_random:
        raise ConfigError(
            f"{variable} is required: no CLIP checkpoint is configured for {model_name} (set "
            "GANFOLK_ALLOW_RANDOM_WEIGHTS=1 to run with random weights in demo/test mode)"
        )
    on_cuda = str(device).startswith("cuda")
    dtype = torch.float16 if on_cuda else torch.float32
    # Built on CPU in fp32, weights loaded, then moved: one code path for every device.
    model = open_clip.create_model(model_name, pretrained=None, device="cpu", pretrained_text=False)
    if checkpoint is None:
        log.warning("CLIP %s is running on RANDOM weights (demo/test mode); outputs are marked", model_name)
        ref = model_ref(model_name, random_weights=True)
    else:
        path = fetch_weights(checkpoint, settings or Settings(), sha256, variable)
        try:
            open_clip.load_checkpoint(model, str(path), strict=True)
        except (RuntimeError, KeyError, StopIteration) as exc:
            raise ValueError(
                f"checkpoint {path} ({variable}) does not fit open_clip architecture {model_name}: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        except Exception as exc:  # unreadable bytes surface as assorted unpickler / zip errors
            if isinstance(exc, ValueError | FileNotFoundError):
                raise
            raise ValueError(
                f"checkpoint {path} ({variable}) is not a readable torch checkpoint: {exc}"
            ) from exc
        ref = model_ref(model_name, checkpoint, (sha256 or "").lower())
        log.info("clip loaded", extra={"model": model_name, "checkpoint": str(path), "device": device})
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    pp_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    preprocess = image_transform_v2(PreprocessCfg(**pp_cfg), is_train=False)
    tokenizer = open_clip.get_tokenizer(model_name)
    context_length = (
        getattr(tokenizer, "context_length", None) or getattr(model, "context_length", None) or 77
    )
    return LoadedClip(
        model, preprocess, tokenizer, model_name, str(device), dtype, ref, pp_cfg, context_length
    )
