"""Alignment, inpainting and dataset preparation. No gRPC or NATS here.

Alignment follows the FFHQ recipe (NVIDIA's ``ffhq-dataset`` ``recreate_aligned_images``):
eye centres and mouth corners from the 68 dlib landmarks give an oriented square ``quad``
around the face, which is warped to an ``output_size`` square. Two differences:

* ``looseness`` scales the quad about its centre (1.0 = FFHQ); the article crops looser
  to keep the whole head and shoulders.
* FFHQ pads the outside of the picture with a blurred reflection; here the area that
  fell outside the source picture is left black and returned as a mask (white = outside),
  which inpainting (LaMa, or OpenCV Telea) fills, as in the article.

With ``level_eyes`` (default) the quad's x axis is the eye line, so the eyes are exactly
level in the output; without it the axis is FFHQ's blend of the eye line and the
eye-to-mouth direction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import stat
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from ganfolk.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from ganfolk.runtime.images import decode_image, encode_png
from ganfolk.runtime.models import fetch_weights, model_ref, resolve_device
from ganfolk.runtime.storage import ObjectNotFound, ObjectStore, parse_uri, validate_key
from ganfolk.v1 import common_pb2
from services.align.config import AlignSettings
from services.align.detect import Detector, Face, FaceDetector, load_detector

log = logging.getLogger(__name__)

InpaintName = Literal["auto", "lama", "telea"]
Selection = Literal["largest", "all"]
TELEA = "opencv-telea"


@dataclass(frozen=True)
class AlignParams:
    output_size: int = 512
    looseness: float = 1.0
    detector: Detector = "hog"
    selection: Selection = "largest"
    inpaint: bool = False
    inpaint_method: InpaintName = "auto"
    level_eyes: bool = True


@dataclass
class AlignedFace:
    image: np.ndarray  # S x S x 3 uint8; black where the mask is set (unless inpainted)
    mask: np.ndarray  # S x S uint8, 255 where the output fell outside the source picture
    landmarks: np.ndarray  # (68, 2) in source coordinates
    box: tuple[float, float, float, float]
    # Angle of the crop's top edge (the eye line) in the source, degrees, y down: the output is the
    # source turned by this much counter-clockwise as displayed.
    rotation_degrees: float
    quad: np.ndarray  # (4, 2) source corners of the output: top-left, bottom-left, bottom-right, top-right
    matrix: np.ndarray  # (2, 3) affine: source pixel centre -> output pixel centre
    score: float = 0.0
    inpainted_with: str | None = None

    def to_output(self, points: np.ndarray) -> np.ndarray:
        """Map source points (N, 2) to output coordinates."""
        pts = np.asarray(points, dtype=np.float64)
        return pts @ self.matrix[:, :2].T + self.matrix[:, 2]


# --------------------------------------------------------------------------- geometry


def face_quad(landmarks: np.ndarray, looseness: float = 1.0, level_eyes: bool = True) -> np.ndarray:
    """FFHQ's oriented crop square from 68 landmarks, scaled by ``looseness`` about its centre."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"need 68 (x, y) landmarks, got shape {lm.shape}")
    eye_left = lm[36:42].mean(0)
    eye_right = lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    if level_eyes:
        x = eye_to_eye.copy()
    else:
        x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = float(np.hypot(*x))
    if norm < 1e-6:
        raise InvalidArgument("degenerate landmarks: the eyes coincide")
    x /= norm
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) * looseness
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_inverse_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """Affine (2, 3) mapping output pixel centres to source pixel centres (PIL QUAD semantics)."""
    c = quad.mean(0)
    x = (quad[3] - quad[0]) / 2.0
    y = (quad[1] - quad[0]) / 2.0
    k = 2.0 / size
    offset = c + (1.0 / size - 1.0) * (x + y)
    return np.array([[k * x[0], k * y[0], offset[0]], [k * x[1], k * y[1], offset[1]]], dtype=np.float64)


def outside_mask(inverse: np.ndarray, size: int, width: int, height: int) -> np.ndarray:
    """uint8 mask, 255 where an output pixel's centre maps outside the source picture."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inverse[0, 0] * u + inverse[0, 1] * v + inverse[0, 2]
    sy = inverse[1, 0] * u + inverse[1, 1] * v + inverse[1, 2]
    out = (sx < -0.5) | (sx >= width - 0.5) | (sy < -0.5) | (sy >= height - 0.5)
    return out.astype(np.uint8) * 255


def warp_face(image: np.ndarray, face: Face, params: AlignParams) -> AlignedFace:
    """Warp one detected face to an aligned ``output_size`` square with its out-of-picture mask."""
    size = params.output_size
    h, w = image.shape[:2]
    quad = face_quad(face.landmarks, params.looseness, params.level_eyes)
    inverse = quad_inverse_matrix(quad, size)
    mask = outside_mask(inverse, size, w, h)

    # Only the quad's bounding box (plus a margin for interpolation) is read.
    x0 = max(math.floor(quad[:, 0].min()) - 2, 0)
    y0 = max(math.floor(quad[:, 1].min()) - 2, 0)
    x1 = min(math.ceil(quad[:, 0].max()) + 3, w)
    y1 = min(math.ceil(quad[:, 1].max()) + 3, h)
    if x1 <= x0 or y1 <= y0:
        raise InvalidArgument("the face's crop lies entirely outside the picture")
    crop = image[y0:y1, x0:x1]
    local = inverse.copy()
    local[:, 2] -= (x0, y0)
    # Like FFHQ: shrink first (area averaging) when the crop is over twice the output size.
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    shrink = math.floor(qsize / size * 0.5)
    if shrink > 1:
        ch, cw = crop.shape[:2]
        new = (max(1, round(cw / shrink)), max(1, round(ch / shrink)))
        crop = cv2.resize(crop, new, interpolation=cv2.INTER_AREA)
        fx, fy = new[0] / cw, new[1] / ch
        # centre coords p -> (p + 0.5) * f - 0.5
        local = np.array(
            [
                [local[0, 0] * fx, local[0, 1] * fx, (local[0, 2] + 0.5) * fx - 0.5],
                [local[1, 0] * fy, local[1, 1] * fy, (local[1, 2] + 0.5) * fy - 0.5],
            ]
        )
    aligned = cv2.warpAffine(
        np.ascontiguousarray(crop),
        local,
        (size, size),
        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    aligned[mask > 0] = 0
    forward = cv2.invertAffineTransform(inverse)
    x_axis = quad[3] - quad[0]
    return AlignedFace(
        image=aligned,
        mask=mask,
        landmarks=face.landmarks,
        box=face.box,
        rotation_degrees=math.degrees(math.atan2(x_axis[1], x_axis[0])),
        quad=quad,
        matrix=forward,
        score=face.score,
    )


# --------------------------------------------------------------------------- inpainting


def telea(image: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """OpenCV's Telea (fast marching) inpainting of ``mask > 0``."""
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    out = cv2.inpaint(bgr, (mask > 0).astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    return np.asarray(cv2.cvtColor(out, cv2.COLOR_BGR2RGB))


class LamaInpainter:
    """A LaMa TorchScript module with the ``big-lama.pt`` interface.

    ``module(image, mask)``: image (1, 3, H, W) float in [0, 1] (RGB), mask (1, 1, H, W) float
    in {0, 1} (1 = fill), H and W multiples of 8 → image (1, 3, H, W) in [0, 1]. Inputs are
    padded symmetrically to a multiple of 8 and the result is pasted into the masked area only.
    """

    def __init__(self, module: Any, device: str, model: common_pb2.ModelRef, modulo: int = 8) -> None:
        self.module = module
        self.device = device
        self.model = model
        self.modulo = modulo

    @classmethod
    def load(cls, path: Path, device: str, model: common_pb2.ModelRef) -> LamaInpainter:
        import torch

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is LaMa's published format
                module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:
            raise ValueError(f"{path} is not a LaMa TorchScript file (torch.jit.load failed: {exc})") from exc
        module.eval()
        return cls(module, device, model)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        h, w = image.shape[:2]
        m = self.modulo
        ph, pw = (-h) % m, (-w) % m
        img = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
        msk = np.pad((mask > 0).astype(np.float32), ((0, ph), (0, pw)), mode="symmetric")
        t_img = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None].to(self.device)
        t_msk = torch.from_numpy(msk)[None, None].to(self.device)
        with torch.inference_mode():
            out = self.module(t_img, t_msk)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(t_img.shape):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise RuntimeError(f"LaMa returned {shape}, expected a tensor of shape {tuple(t_img.shape)}")
        res = out[0, :, :h, :w].permute(1, 2, 0).float().cpu().numpy()
        res = np.clip(res * 255.0 + 0.5, 0, 255).astype(np.uint8)
        filled = image.copy()
        sel = mask > 0
        filled[sel] = res[sel]
        return filled


# --------------------------------------------------------------------------- the loaded core


class Aligner:
    """Detector + landmarks + optional LaMa: what the service loads once."""

    def __init__(
        self,
        detector: FaceDetector,
        lama: LamaInpainter | None = None,
        telea_radius: int = 3,
        device: str = "cpu",
    ) -> None:
        self.detector = detector
        self.lama = lama
        self.telea_radius = telea_radius
        self.device = device

    @property
    def models(self) -> list[common_pb2.ModelRef]:
        """Every loaded model (the runtime's core convention, shown by GetInfo)."""
        refs = list(self.detector.models.values())
        if self.lama is not None:
            refs.append(self.lama.model)
        return refs

    @property
    def fallbacks(self) -> list[str]:
        """Classical algorithms standing in for a learned model on this replica."""
        return [] if self.lama is not None else [TELEA]

    def models_for(
        self, detector: Detector | None = None, inpainted_with: str | None = None
    ) -> list[common_pb2.ModelRef]:
        """The models that took part in one output."""
        refs = []
        if detector is not None:
            refs.append(self.detector.models[detector])
            refs.append(self.detector.models["landmarks"])
        if inpainted_with == "lama" and self.lama is not None:
            refs.append(self.lama.model)
        return refs

    def detect(self, image: np.ndarray, detector: Detector = "hog") -> list[Face]:
        return self.detector.detect(image, detector)

    def resolve_inpaint(self, method: InpaintName) -> str:
        """``"lama"`` or ``"telea"`` for a requested method; LaMa must be configured to be asked for."""
        if method == "lama":
            if self.lama is None:
                raise FailedPrecondition(
                    "LaMa is not configured on this replica: set GANFOLK_ALIGN_LAMA_CHECKPOINT, or ask for "
                    "INPAINT_METHOD_AUTO / INPAINT_METHOD_TELEA"
                )
            return "lama"
        if method == "telea":
            return "telea"
        return "lama" if self.lama is not None else "telea"

    def inpaint(
        self, image: np.ndarray, mask: np.ndarray, method: InpaintName = "auto"
    ) -> tuple[np.ndarray, str]:
        """Fill ``mask > 0``; returns the image and the method used ("lama" or "telea")."""
        if image.shape[:2] != mask.shape[:2]:
            raise InvalidArgument(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{image.shape[1]}x{image.shape[0]}; they must be the same size"
            )
        used = self.resolve_inpaint(method)
        if not (mask > 0).any():
            return image.copy(), used
        if used == "lama":
            assert self.lama is not None
            return self.lama(image, mask), used
        return telea(image, mask, self.telea_radius), used

    def align(self, image: np.ndarray, params: AlignParams) -> list[AlignedFace]:
        """Detect, then warp the largest face (or all); [] when no face is found."""
        faces = self.detect(image, params.detector)
        if params.selection == "largest":
            faces = faces[:1]
        out = []
        for face in faces:
            aligned = warp_face(image, face, params)
            if params.inpaint and (aligned.mask > 0).any():
                aligned.image, aligned.inpainted_with = self.inpaint(
                    aligned.image, aligned.mask, params.inpaint_method
                )
            out.append(aligned)
        return out

    def align_or_raise(self, image: np.ndarray, params: AlignParams) -> list[AlignedFace]:
        faces = self.align(image, params)
        if not faces:
            hint = " or try detector=FACE_DETECTOR_CNN" if params.detector == "hog" else ""
            raise NotFound(
                f"no face found in the {image.shape[1]}x{image.shape[0]} image by the dlib {params.detector} "
                "detector: send a photo with a clearly visible face "
                f"(at least ~40 px between chin and brow){hint}"
            )
        return faces


def fallbacks_of(methods: list[str | None]) -> list[str]:
    return [TELEA] if "telea" in methods else []


def load_aligner(settings: AlignSettings) -> Aligner:
    """Load LaMa when configured (checked first: it fails fast), then the dlib models."""
    lama = None
    device = "cpu"
    if settings.align_lama_checkpoint:
        device = resolve_device(settings.device)
        path = fetch_weights(
            settings.align_lama_checkpoint,
            settings,
            settings.align_lama_checkpoint_sha256,
            "GANFOLK_ALIGN_LAMA_CHECKPOINT",
        )
        ref = model_ref("lama", settings.align_lama_checkpoint, settings.align_lama_checkpoint_sha256 or "")
        lama = LamaInpainter.load(path, device, ref)
        log.info("LaMa loaded", extra={"checkpoint": str(path), "device": device})
    else:
        log.info("no LaMa checkpoint configured: inpainting uses OpenCV Telea (%s)", TELEA)
    detector = load_detector(
        settings.align_landmarks_model,
        settings.align_cnn_detector_model,
        settings.align_detect_max_side,
        settings.align_hog_upsample,
        settings.align_cnn_upsample,
    )
    return Aligner(detector, lama, settings.align_telea_radius, device)


# --------------------------------------------------------------------------- dataset preparation

MANIFEST = "manifest.json"
DONE = "done"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Progress:
    total: int
    processed: int
    skipped: int
    current: str
    done: bool = False
    manifest_uri: str = ""


@dataclass
class SourceFile:
    name: str  # relative to the source folder / prefix
    read: Callable[[], bytes] = field(repr=False)


class Unreadable(Exception):
    """A source file that cannot be read; the message (an OS reason, never a path or a byte of
    the file) goes into its skipped record."""


def _read_file(path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        # O_NOFOLLOW: a file swapped for a link after listing is not followed out of the allowed
        # folders; O_NONBLOCK: one swapped for a FIFO cannot hang the run.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise Unreadable(_os_reason(exc)) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Unreadable("not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as f:
                return f.read()
        except OSError as exc:
            raise Unreadable(_os_reason(exc)) from None
        finally:
            os.close(fd)

    return read


def _refused(reason: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise Unreadable(reason)

    return read


def _os_reason(exc: OSError) -> str:
    """What went wrong, without the path an OSError's text carries."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(r) for r in roots)


def _list_folder(
    folder: Path, shown: str, limit: int, exclude: Path | None, roots: list[Path]
) -> list[SourceFile]:
    """Regular files under ``folder`` (resolved), hidden ones excluded, sorted by path.

    Linked folders are not entered; a linked file is read only when its target lies under
    ``roots``, else it is listed as skipped. A sub-folder that cannot be listed is listed as
    skipped too, so one unreadable folder neither fails the run nor vanishes silently.
    """
    try:
        if not folder.is_dir():
            raise NotFound(f"source folder not found: {shown}")
        top = list(os.scandir(folder))
    except PermissionError:
        raise InvalidArgument(
            f"source folder {shown} cannot be read by the align service (permission denied): "
            "make it readable by the service's user, or upload the photos to the store"
        ) from None
    except OSError as exc:
        raise InvalidArgument(f"source folder {shown} cannot be read: {_os_reason(exc)}") from None
    files: list[SourceFile] = []
    pending: list[tuple[str, list[os.DirEntry[str]]]] = [("", top)]
    while pending:
        rel_dir, entries = pending.pop()
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if exclude is not None and Path(entry.path) == exclude:
                        continue
                    try:
                        with os.scandir(entry.path) as it:
                            pending.append((rel, list(it)))
                    except OSError as exc:
                        files.append(SourceFile(rel + "/", _refused(f"folder: {_os_reason(exc)}")))
                    continue
                if entry.is_symlink():
                    target = Path(entry.path).resolve()
                    if not target.is_file():
                        continue  # a linked folder, or a dangling link
                    if _inside(target, roots):
                        files.append(SourceFile(rel, _read_file(str(target))))
                    else:
                        files.append(
                            SourceFile(rel, _refused("a link to a file outside the allowed folders"))
                        )
                elif entry.is_file(follow_symlinks=False):
                    files.append(SourceFile(rel, _read_file(entry.path)))
                # FIFOs, sockets and devices are not photos: left out.
            except OSError as exc:
                files.append(SourceFile(rel, _refused(_os_reason(exc))))
            if len(files) > limit:
                raise InvalidArgument(
                    f"source holds more than {limit:,} files; split it into several requests"
                )
    files.sort(key=lambda f: f.name.split("/"))
    return files


def _list_prefix(store: ObjectStore, prefix: str, exclude: str, limit: int) -> list[SourceFile]:
    files = []
    for info in store.list(prefix + "/" if prefix else ""):
        if info.key == exclude or info.key.startswith(exclude + "/"):
            continue
        rel = info.key[len(prefix) + 1 :] if prefix else info.key
        files.append(SourceFile(rel, lambda key=info.key: store.get(key)))  # type: ignore[misc]
        if len(files) > limit:
            raise InvalidArgument(f"source holds more than {limit:,} files; split it into several requests")
    return files


def _allowed_folder(folder: Path, shown: str, roots: list[Path], configured: bool) -> Path:
    resolved = folder.resolve()
    if _inside(resolved, roots):
        return resolved
    if not configured:
        raise InvalidArgument(
            f"source {shown} is a folder on the align server, and this service reads no local folders "
            "outside its store (GANFOLK_ALIGN_LOCAL_SOURCE_ROOTS is not set): upload the photos to the "
            "object store and send the URI of their prefix (s3://bucket/prefix)"
        )
    raise InvalidArgument(
        f"source folder {shown} is outside the folders this service may read "
        f"({', '.join(str(r) for r in roots)}; GANFOLK_ALIGN_LOCAL_SOURCE_ROOTS): "
        "upload the photos to the store instead"
    )


def list_source(
    store: ObjectStore, source: str, destination: str, limit: int, roots: list[str] | None = None
) -> list[SourceFile]:
    """Files under a folder path, a file:// folder, or an s3://bucket/prefix in the service's store.

    Local folders must lie under one of ``roots``, or inside the store's own folder when the
    store is local; with no ``roots`` no other folder of this machine is read. The
    destination's own objects are never listed as inputs.
    """
    if not source:
        raise InvalidArgument("source is empty: give a folder path, file:///folder or s3://bucket/prefix")
    scheme = source.partition("://")[0].lower() if "://" in source else ""
    if scheme not in ("", "file", "s3"):
        raise InvalidArgument(
            f"source scheme {scheme[:20]!r} is not supported: "
            "give s3://bucket/prefix, file:///folder or a folder path"
        )
    if scheme == "s3":
        bucket, _, prefix = source[5:].partition("/")
        prefix = prefix.strip("/")
        try:
            store.key_from_uri(f"s3://{bucket}/probe")
        except ValueError:
            raise InvalidArgument(
                f"source {source!r} is not in this service's object store ({store!r})"
            ) from None
        if prefix:
            try:
                validate_key(prefix)
            except ValueError as exc:
                raise InvalidArgument(f"source prefix {prefix!r}: {exc}") from None
        return _list_prefix(store, prefix, destination, limit)
    exclude = None
    allowed = [Path(r).resolve() for r in roots or []]
    dest_uri = store.uri(destination)
    if dest_uri.startswith("file://"):
        exclude = Path("/" + parse_uri(dest_uri)[2])
        # The store's own folder (a local store) is no more secret than what the store serves.
        allowed.append(Path("/" + parse_uri(store.uri("probe"))[2]).parent)
    if scheme == "file":
        trimmed = source.rstrip("/")
        try:
            folder = Path("/" + parse_uri(trimmed)[2]) if trimmed != "file:" else Path("/")
        except ValueError as exc:
            raise InvalidArgument(f"source is not a usable file:// URI: {exc}") from None
    else:
        folder = Path(source)
    resolved = _allowed_folder(folder, source, allowed, bool(roots))
    return _list_folder(resolved, source, limit, exclude, allowed)


def _slug(rel: str) -> str:
    stem = Path(rel).stem
    safe = _SAFE.sub("-", stem).strip("-.")[:60] or "image"
    return f"{safe}-{hashlib.sha256(rel.encode()).hexdigest()[:12]}"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.floating | np.integer):
        return o.item()
    raise TypeError(type(o).__name__)


def _put_json(store: ObjectStore, key: str, data: dict[str, Any]) -> str:
    body = json.dumps(data, indent=1, default=_json_default).encode()
    return store.put(key, body, content_type="application/json").uri


def prepare_dataset(
    aligner: Aligner,
    store: ObjectStore,
    source: str,
    destination: str,
    params: AlignParams,
    max_pixels: int,
    progress: Callable[[Progress], None] | None = None,
    max_files: int = 100_000,
    local_roots: list[str] | None = None,
) -> Progress:
    """Align (and inpaint) every image under ``source`` into ``destination`` in the store.

    Layout under ``destination``: ``images/<slug>[-fN].png``, ``masks/<slug>[-fN].png``,
    ``done/<slug>.json`` (one marker per source file: its faces and landmarks, or why it
    was skipped) and ``manifest.json`` (all markers, written at the end). A rerun after a
    crash reads the markers and redoes only the files without one; unreadable files, files
    with no face or over the pixel limit are skipped and recorded, not retried.
    """
    dest = validate_key(destination.strip("/"))
    files = list_source(store, source, dest, max_files, local_roots)
    total = len(files)
    started = time.perf_counter()

    done: dict[str, dict[str, Any]] = {}
    for info in store.list(f"{dest}/{DONE}/"):
        with contextlib.suppress(ObjectNotFound, ValueError):
            marker = json.loads(store.get(info.key))
            done[marker["source"]] = marker

    processed = skipped = 0

    def report(current: str) -> None:
        if progress is not None:
            progress(Progress(total, processed, skipped, current))

    for f in files:
        marker = done.get(f.name)
        if marker is None:
            marker = _prepare_one(aligner, store, f, dest, params, max_pixels)
            _put_json(store, f"{dest}/{DONE}/{_slug(f.name)}.json", marker)
            done[f.name] = marker
        if marker.get("skipped"):
            skipped += 1
        else:
            processed += 1
        report(f.name)

    names = {f.name for f in files}
    entries = [done[f.name] for f in files]
    manifest = {
        "source": source,
        "destination": dest,
        "params": asdict(params),
        "total": total,
        "processed": processed,
        "skipped": skipped,
        "inpainting": sorted({m for e in entries for m in e.get("inpainted_with", []) if m}),
        "fallbacks": fallbacks_of([m for e in entries for m in e.get("inpainted_with", [])]),
        "models": [
            {"name": r.name, "source": r.source, "sha256": r.sha256}
            for r in aligner.models_for(params.detector, "lama" if params.inpaint else None)
        ],
        "files": [e for e in entries if not e.get("skipped")],
        "skipped_files": [
            {"source": e["source"], "reason": e["reason"]} for e in entries if e.get("skipped")
        ],
        # Markers of files no longer in the source are kept but not listed.
        "stale_markers": sorted(set(done) - names),
        "duration_seconds": time.perf_counter() - started,
    }
    uri = _put_json(store, f"{dest}/{MANIFEST}", manifest)
    final = Progress(total, processed, skipped, "", done=True, manifest_uri=uri)
    if progress is not None:
        progress(final)
    return final


def _prepare_one(
    aligner: Aligner, store: ObjectStore, f: SourceFile, dest: str, params: AlignParams, max_pixels: int
) -> dict[str, Any]:
    def skip(reason: str) -> dict[str, Any]:
        log.info("skipped %s: %s", f.name, reason)
        return {"source": f.name, "skipped": True, "reason": reason}

    try:
        data = f.read()
    except Unreadable as exc:
        return skip(f"unreadable: {exc}")
    except ObjectNotFound:
        return skip("unreadable: the object is gone from the store")
    try:
        image = np.asarray(decode_image(data, max_pixels))
    except ValueError as exc:
        return skip(str(exc))
    faces = aligner.align(image, params)
    if not faces:
        return skip(f"no face found by the dlib {params.detector} detector")
    slug = _slug(f.name)
    out = []
    for i, face in enumerate(faces):
        suffix = "" if len(faces) == 1 else f"-f{i}"
        img = store.put(f"{dest}/images/{slug}{suffix}.png", encode_png(face.image), content_type="image/png")
        msk = store.put(f"{dest}/masks/{slug}{suffix}.png", encode_png(face.mask), content_type="image/png")
        out.append(
            {
                "image": img.uri,
                "sha256": img.sha256,
                "mask": msk.uri,
                "masked_fraction": float((face.mask > 0).mean()),
                "landmarks": np.round(face.landmarks, 2),
                "box": [round(v, 2) for v in face.box],
                "rotation_degrees": round(face.rotation_degrees, 4),
                "inpainted_with": face.inpainted_with,
            }
        )
    return {
        "source": f.name,
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "faces": out,
        "inpainted_with": [o["inpainted_with"] for o in out],
    }
