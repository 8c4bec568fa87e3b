"""Photos and broken files for the align tests (scikit-image's astronaut portrait)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image
from skimage import data


def astronaut() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut())


def no_face() -> np.ndarray:
    return np.ascontiguousarray(data.coffee())


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` RGB pixels, with almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _chunk(b"IEND", b"")
    )


def corrupt_png() -> bytes:
    """A real PNG cut in the middle of its pixel data."""
    good = encode(astronaut())
    return good[: len(good) // 3]


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return landmarks[36:42].mean(0), landmarks[42:48].mean(0)
