"""dlib face detection (HOG or CNN mmod) and the 68-point shape predictor.

The ``.dat`` models are located on disk: the ``face_recognition_models`` package's
``models/`` folder (found by walking the site-packages folders, never by importing the
package: its ``__init__`` needs ``pkg_resources``) or Debian's ``libdlib-data``.
"""

from __future__ import annotations

import logging
import site
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.models import model_ref
from ganfolk.runtime.settings import ConfigError
from ganfolk.v1 import common_pb2

log = logging.getLogger(__name__)

LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
CNN_FILE = "mmod_human_face_detector.dat"
DEBIAN_DIRS = (Path("/usr/share/dlib"), Path("/usr/share/dlib-data"), Path("/usr/local/share/dlib"))

Detector = Literal["hog", "cnn"]


def _search_dirs() -> Iterable[Path]:
    seen: set[Path] = set()
    roots: list[str] = []
    try:
        roots.extend(site.getsitepackages())
    except AttributeError:  # some virtualenv builds lack it
        pass
    roots.append(site.getusersitepackages())
    roots.extend(p for p in sys.path if p)
    for root in roots:
        candidate = Path(root) / "face_recognition_models" / "models"
        if candidate not in seen:
            seen.add(candidate)
            yield candidate
    yield from DEBIAN_DIRS


def locate_model(filename: str) -> Path | None:
    """Path of a dlib ``.dat`` model in face_recognition_models/models or libdlib-data, else None."""
    for folder in _search_dirs():
        path = folder / filename
        if path.is_file():
            return path
    return None


@dataclass
class Face:
    """One detected face in source-image coordinates."""

    box: tuple[float, float, float, float]  # left, top, right, bottom
    landmarks: np.ndarray  # (68, 2) float64, pixel centres
    score: float

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return max(right - left, 0.0) * max(bottom - top, 0.0)


class FaceDetector:
    """dlib HOG (always) and CNN (when its model is present) detectors + 68-point landmarks."""

    def __init__(
        self,
        landmarks_path: Path,
        cnn_path: Path | None = None,
        detect_max_side: int = 1024,
        hog_upsample: int = 1,
        cnn_upsample: int = 0,
    ) -> None:
        import dlib

        self._dlib = dlib
        self.landmarks_path = landmarks_path
        self.cnn_path = cnn_path
        self.detect_max_side = detect_max_side
        self.hog_upsample = hog_upsample
        self.cnn_upsample = cnn_upsample
        self.hog = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(landmarks_path))
        self.cnn = dlib.cnn_face_detection_model_v1(str(cnn_path)) if cnn_path else None
        # dlib's detectors keep scratch state; one detection at a time per process.
        self._lock = threading.Lock()
        self.models: dict[str, common_pb2.ModelRef] = {
            "landmarks": model_ref(
                "dlib-shape-predictor-68", str(landmarks_path), file_sha256(landmarks_path)
            ),
            "hog": model_ref("dlib-hog-frontal-face"),
        }
        if cnn_path:
            self.models["cnn"] = model_ref("dlib-mmod-human-face", str(cnn_path), file_sha256(cnn_path))

    def _upsample(self, image: np.ndarray, wanted: int) -> int:
        """Pyramid-up steps, fewer when they would take detection past ``detect_max_side`` px."""
        side = max(image.shape[:2])
        up = 0
        while up < wanted and side * 2 ** (up + 1) <= self.detect_max_side:
            up += 1
        return up

    def detect(self, image: np.ndarray, detector: Detector = "hog") -> list[Face]:
        """Faces in an RGB uint8 image, largest first (ties: higher detector score first)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image, got shape {image.shape} dtype {image.dtype}")
        if detector == "cnn" and self.cnn is None:
            raise ValueError(
                f"the CNN face detector is not available on this replica ({CNN_FILE} not found; "
                "set GANFOLK_ALIGN_CNN_DETECTOR_MODEL) — use detector=FACE_DETECTOR_HOG"
            )
        image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.detect_max_side / max(h, w))
        small = image
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            scale_x, scale_y = size[0] / w, size[1] / h
        else:
            scale_x = scale_y = 1.0
        dlib = self._dlib
        faces: list[Face] = []
        with self._lock:
            found: list[tuple[object, float]] = []
            if detector == "cnn":
                assert self.cnn is not None
                up = self._upsample(small, self.cnn_upsample)
                found = [(d.rect, float(d.confidence)) for d in self.cnn(small, up)]
            else:
                rects, scores, _ = self.hog.run(small, self._upsample(small, self.hog_upsample), 0.0)
                found = [(r, float(s)) for r, s in zip(rects, scores, strict=True)]
            for rect, score in found:
                box = (
                    rect.left() / scale_x,  # type: ignore[attr-defined]
                    rect.top() / scale_y,  # type: ignore[attr-defined]
                    (rect.right() + 1) / scale_x,  # type: ignore[attr-defined]
                    (rect.bottom() + 1) / scale_y,  # type: ignore[attr-defined]
                )
                full = dlib.rectangle(round(box[0]), round(box[1]), round(box[2]) - 1, round(box[3]) - 1)
                shape = self.predictor(image, full)
                pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
                faces.append(Face(box, pts, score))
        faces.sort(key=lambda f: (-f.area, -f.score))
        return faces


def load_detector(
    landmarks_model: str | None,
    cnn_model: str | None,
    detect_max_side: int = 1024,
    hog_upsample: int = 1,
    cnn_upsample: int = 0,
) -> FaceDetector:
    """Locate (when not given) and load the dlib models; a missing landmarks model stops start-up."""
    if landmarks_model:
        landmarks = Path(landmarks_model.removeprefix("file://"))
        if not landmarks.is_file():
            raise FileNotFoundError(
                f"dlib landmarks model not found: {landmarks} (GANFOLK_ALIGN_LANDMARKS_MODEL)"
            )
    else:
        found = locate_model(LANDMARKS_FILE)
        if found is None:
            raise ConfigError(
                f"{LANDMARKS_FILE} not found: `pip install face_recognition_models` (or apt-get install "
                "libdlib-data), or set GANFOLK_ALIGN_LANDMARKS_MODEL to the file"
            )
        landmarks = found
    cnn: Path | None
    if cnn_model:
        cnn = Path(cnn_model.removeprefix("file://"))
        if not cnn.is_file():
            raise FileNotFoundError(f"dlib CNN detector not found: {cnn} (GANFOLK_ALIGN_CNN_DETECTOR_MODEL)")
    else:
        cnn = locate_model(CNN_FILE)
        if cnn is None:
            log.warning("%s not found: only the HOG face detector is available", CNN_FILE)
    log.info("dlib models", extra={"landmarks": str(landmarks), "cnn": str(cnn) if cnn else None})
    key = (landmarks.resolve(), cnn.resolve() if cnn else None, detect_max_side, hog_upsample, cnn_upsample)
    with _CACHE_LOCK:
        # One load per process: a restarted in-process server (tests, reloads) reuses the 100 MB model.
        if key not in _CACHE:
            _CACHE[key] = FaceDetector(landmarks, cnn, detect_max_side, hog_upsample, cnn_upsample)
        return _CACHE[key]


_CACHE: dict[tuple[object, ...], FaceDetector] = {}
_CACHE_LOCK = threading.Lock()
