"""Image decoding guards shared by every service."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ganfolk.runtime.images import decode_image, encode_png, read_image_sync
from ganfolk.runtime.storage import LocalStore
from ganfolk.v1 import common_pb2


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size without carrying its pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_oversized_image_rejected_from_header() -> None:
    with pytest.raises(ValueError, match=r"20000x20000 = 400,000,000 pixels, over the limit of 40,000,000"):
        decode_image(png_header(20_000, 20_000), max_pixels=40_000_000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, not an image", "not an image"),
        (
            encode_png(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[:-200],
            "corrupt",
        ),
    ],
)
def test_bad_bytes(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_image(data, max_pixels=10_000)


def test_refs_inline_and_by_uri(tmp_path) -> None:
    store = LocalStore(tmp_path)
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    data = encode_png(pixels)
    info = store.put("a/b.png", data, content_type="image/png")
    by_uri = read_image_sync(store, common_pb2.ImageRef(uri=info.uri, sha256=info.sha256), 100)
    inline = read_image_sync(store, common_pb2.ImageRef(inline_data=data), 100)
    assert np.array_equal(np.asarray(by_uri), pixels) and np.array_equal(np.asarray(inline), pixels)
    with pytest.raises(ValueError, match="set uri or inline_data"):
        read_image_sync(store, common_pb2.ImageRef(), 100)
    with pytest.raises(ValueError, match=f"{len(data)} bytes, over 10;"):
        read_image_sync(store, common_pb2.ImageRef(inline_data=data), 100, max_inline_bytes=10)
    with pytest.raises(ValueError, match="does not match its sha256"):
        read_image_sync(store, common_pb2.ImageRef(inline_data=data, sha256="0" * 64), 100)


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (7, 5, 1), (13, 9, 3), (13, 9, 4), (64, 48, 3)])
def test_png_round_trip(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(len(shape)).integers(0, 256, shape, dtype=np.uint8)
    for source in (pixels, pixels.swapaxes(0, 1)):  # a transposed view is not C-contiguous
        decoded = np.asarray(Image.open(io.BytesIO(encode_png(source))))
        assert np.array_equal(decoded.reshape(source.shape), source)


def test_png_other_modes_go_through_pillow() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for img in (Image.fromarray(rgb).convert("P"), Image.fromarray(rgb[..., 0] > 127)):
        decoded = Image.open(io.BytesIO(encode_png(img)))
        assert decoded.mode == img.mode and np.array_equal(np.asarray(decoded), np.asarray(img))
