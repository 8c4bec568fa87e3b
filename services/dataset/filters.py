"""Measurements the filters decide on: sharpness, greyscale, perceptual hashes and duplicates.

Each function measures; the thresholds live in :class:`services.dataset.prepare.PrepareOptions`,
so a rerun with other thresholds reuses the measurements of the first run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

__all__ = ["SHARPNESS_SIZE", "DupCandidate", "chroma", "find_duplicates", "hamming", "phash", "sharpness"]

# Sharpness is measured on the aligned face warped to this size straight from the source, so a
# small face blown up to the training size reads as blurred, whatever that size is.
SHARPNESS_SIZE = 256
_CHROMA_SIZE = 128
# The border a rotation leaves is black with a hard edge; the Laplacian there says nothing
# about the picture, so the mask is grown by this many pixels before measuring.
_MASK_MARGIN = 3


def sharpness(aligned: np.ndarray, outside: np.ndarray | None = None) -> float:
    """Variance of the Laplacian of the grey image, over the pixels inside the source picture."""
    grey = cv2.cvtColor(np.ascontiguousarray(aligned), cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_64F)
    if outside is not None and (outside > 0).any():
        k = 2 * _MASK_MARGIN + 1
        grown = cv2.dilate((outside > 0).astype(np.uint8), np.ones((k, k), np.uint8)) > 0
        values = lap[~grown]
        return float(values.var()) if values.size else 0.0
    return float(lap.var())


def chroma(image: np.ndarray) -> float:
    """Mean spread between the RGB channels (0 for a grey picture, 0-255), on a small copy."""
    h, w = image.shape[:2]
    scale = min(1.0, _CHROMA_SIZE / max(h, w))
    small = image
    if scale < 1.0:
        small = cv2.resize(
            image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    s = small.astype(np.int16)
    return float((s.max(axis=2) - s.min(axis=2)).mean())


def phash(image: Image.Image | np.ndarray) -> str:
    """The 64-bit DCT perceptual hash (``imagehash.phash``) as 16 hex digits."""
    import imagehash

    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    return str(imagehash.phash(img, hash_size=8))


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


@dataclass(frozen=True)
class DupCandidate:
    key: str
    phash: str
    pixels: int  # width x height of the source: the larger copy is kept
    order: int  # tie-break: the earlier source and item win


def find_duplicates(items: Sequence[DupCandidate], max_distance: int) -> dict[str, str]:
    """Near-duplicates: ``{dropped key: kept key}``, one kept copy per group.

    Items whose hashes differ in at most ``max_distance`` bits are linked, and each connected
    group keeps its highest-resolution member. Pairs are compared with numpy in row blocks, so
    10,000 items take well under a second.
    """
    n = len(items)
    if n < 2 or max_distance < 0:
        return {}
    hashes = np.array([int(i.phash, 16) for i in items], dtype=np.uint64)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    block = 1024
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        dist = np.bitwise_count(rows[:, None] ^ hashes[None, :])
        for r, c in zip(*np.nonzero(dist <= max_distance), strict=True):
            i, j = start + int(r), int(c)
            if i < j:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[rj] = ri
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    dropped: dict[str, str] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        best = min(members, key=lambda i: (-items[i].pixels, items[i].order, items[i].key))
        for i in members:
            if i != best:
                dropped[items[i].key] = items[best].key
    return dropped
