"""Sources for the dataset tests: face pictures, a loopback HTTP server, files in the real layouts.

Faces are scikit-image's astronaut (the one bundled photo dlib finds a face in) cropped, turned,
mirrored, painted over and scaled: each variant is a different picture to the perceptual hash
(12+ bits apart) except the ones meant as copies.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

OPEN_IMAGES_HEADER = [
    "ImageID",
    "Subset",
    "OriginalURL",
    "OriginalLandingURL",
    "License",
    "AuthorProfileURL",
    "Author",
    "Title",
    "OriginalSize",
    "OriginalMD5",
    "Thumbnail300KURL",
    "Rotation",
]
BOX_HEADER = [
    "ImageID",
    "Source",
    "LabelName",
    "Confidence",
    "XMin",
    "XMax",
    "YMin",
    "YMax",
    "IsOccluded",
    "IsTruncated",
    "IsGroupOf",
    "IsDepiction",
    "IsInside",
]


def _resize(pixels: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS))


def _turn(pixels: np.ndarray, degrees: float) -> np.ndarray:
    h, w = pixels.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(pixels, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def portrait() -> np.ndarray:
    """The astronaut's head and shoulders, 320 x 320."""
    return np.ascontiguousarray(data.astronaut()[0:320, 60:380])


def faces() -> dict[str, np.ndarray]:
    """Named test pictures; the comment says what each should meet in prepare."""
    base = portrait()
    return {
        "upright": _resize(base, 256),  # a face, kept
        "turned": _resize(_turn(base, 15), 256),  # kept: another picture of the same face
        "mirrored": _resize(np.ascontiguousarray(base[:, ::-1]), 256),  # kept
        "painted": cv2.stylization(_resize(_turn(base, 8), 256), sigma_s=30, sigma_r=0.3),  # kept
        "tilted": _resize(_turn(np.ascontiguousarray(data.astronaut()[0:300, 0:300]), -10), 240),  # kept
        "blurred": cv2.GaussianBlur(_resize(base, 256), (0, 0), 2),  # a face, but blurred
        "far": _resize(data.astronaut(), 256),  # face of ~44 px: under the size limit
        "coffee": _resize(data.coffee()[:, 100:500], 192),  # no face
    }


def grey(pixels: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)] * 3, axis=-1)


def encode(pixels: np.ndarray, fmt: str = "JPEG", quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def resized_copy(pixels: np.ndarray, size: int = 240, quality: int = 70) -> bytes:
    """A smaller, re-encoded copy: what a second source holding the same picture looks like."""
    return encode(_resize(pixels, size), "JPEG", quality)


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- HTTP on loopback


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "image/jpeg"
    delay: float = 0.0  # seconds before answering


@dataclass
class Server:
    url: str
    routes: dict[str, Route]
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, User-Agent)
    peak: int = 0  # most requests in flight at once

    def hits(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)


@contextmanager
def serve(routes: dict[str, Route]) -> Iterator[Server]:
    """An HTTP server on 127.0.0.1 answering ``routes`` (anything else is 404)."""
    lock = threading.Lock()
    state = {"now": 0}
    server_info = Server("", routes)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                server_info.requests.append((self.path, self.headers.get("User-Agent", "")))
                state["now"] += 1
                server_info.peak = max(server_info.peak, state["now"])
            try:
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404, "not here")
                    return
                if route.delay:
                    time.sleep(route.delay)
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)
            finally:
                with lock:
                    state["now"] -= 1

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server_info.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_info
    finally:
        httpd.shutdown()
        httpd.server_close()


# --------------------------------------------------------------------------- metadata files


def write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in header})
    return path


ARTISTS = ["Unknown Artist", "ivan-aivazovsky", "john-singer-sargent", "vincent-van-gogh"]
GENRES = ["cityscape", "landscape", "portrait", "Unknown Genre"]
STYLES = ["Impressionism", "Post_Impressionism", "Realism", "Romanticism"]


def write_wikiart(path: Path, rows: list[dict[str, object]]) -> Path:
    """A parquet in huggan/wikiart's layout: image {bytes, path}, class-label ints, features metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def label(names: list[str]) -> dict[str, object]:
        return {"names": names, "_type": "ClassLabel"}

    features = {
        "image": {"_type": "Image"},
        "artist": label(ARTISTS),
        "genre": label(GENRES),
        "style": label(STYLES),
    }
    schema = pa.schema(
        [
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("artist", pa.int64()),
            ("genre", pa.int64()),
            ("style", pa.int64()),
        ],
        metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()},
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, row_group_size=4)
    return path
