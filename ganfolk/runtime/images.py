"""Images in and out of services: decode with guards, resolve ImageRefs, store PNGs.

Every service reads images through :func:`read_image` and writes them through
:func:`store_image`, so the size guard, the hash check and the ImageRef fields are the
same everywhere.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.storage import ObjectStore, sha256_hex
from ganfolk.v1 import common_pb2

# Pillow's own bomb check would fire first with a vaguer message; decode_image checks the
# configured limit from the header, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None


def _sniff_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) straight from a PNG, GIF or BMP header, before Pillow sees it."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return "PNG", w, h
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return "GIF", w, h
    if data[:2] == b"BM" and len(data) >= 26:
        (header_size,) = struct.unpack("<I", data[14:18])
        if header_size == 12:  # OS/2 core header: unsigned 16-bit sizes
            w, h = struct.unpack("<HH", data[18:22])
        else:  # BITMAPINFOHEADER and later: signed, negative height = top-down
            w, h = struct.unpack("<ii", data[18:26])
        return "BMP", abs(w), abs(h)
    return None


def _check_size(fmt: str, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"zero-size image: the {fmt} header says {width}x{height} pixels")
    if width * height > max_pixels:
        raise InvalidArgument(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}; downscale it first"
        )


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode encoded image bytes to upright RGB, refusing empty, corrupt or oversized images.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing. EXIF orientation is applied, alpha dropped, and
    the first frame of an animation used.
    """
    if not data:
        raise InvalidArgument("image is empty (0 bytes)")
    data = bytes(data)
    sniffed = _sniff_size(data)
    if sniffed is not None:
        _check_size(*sniffed, max_pixels)
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise InvalidArgument(
            f"not an image: {len(data):,} bytes starting {data[:8].hex(' ')} are not PNG, JPEG, WebP "
            "or another format Pillow reads"
        ) from None
    except Exception as exc:
        raise InvalidArgument(f"corrupt image header: {exc}") from None
    with img:
        _check_size(img.format or "image", *img.size, max_pixels)
        try:
            img.load()
            upright = ImageOps.exif_transpose(img) or img
            return upright.convert("RGB")
        except Exception as exc:
            raise InvalidArgument(f"corrupt image: {img.format} {img.size[0]}x{img.size[1]}: {exc}") from None


def decode_array(data: bytes, max_pixels: int) -> np.ndarray:
    """:func:`decode_image` as an (H, W, 3) uint8 array."""
    return np.asarray(decode_image(data, max_pixels), dtype=np.uint8).copy()


# zlib level 1 with run-length matching only: after PNG's per-row filters a photo's residuals
# are small numbers that RLE + Huffman codes as tightly as Pillow's default (level 6, full
# LZ77 search), at a quarter of the time (a 512 px face: ~15 ms instead of ~60-85 ms, same
# size within 1%). Encoding sits on the critical path of every task that returns an image.
PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE


def encode_png(img: Image.Image | np.ndarray) -> bytes:
    """Lossless PNG bytes of an image or an (H, W[, C]) uint8 array."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, compress_type=PNG_STRATEGY)
    return buf.getvalue()


def inline_ref(img: Image.Image | np.ndarray) -> common_pb2.ImageRef:
    """The image as PNG bytes inside the reference (nothing stored)."""
    data = encode_png(img)
    width, height = _size(img)
    return common_pb2.ImageRef(
        inline_data=data, sha256=sha256_hex(data), width=width, height=height, media_type="image/png"
    )


def _size(img: Image.Image | np.ndarray) -> tuple[int, int]:
    if isinstance(img, np.ndarray):
        return int(img.shape[1]), int(img.shape[0])
    return img.size


def store_image_sync(
    store: ObjectStore, key: str, img: Image.Image | np.ndarray, *, inline: bool = False
) -> common_pb2.ImageRef:
    """:func:`store_image` in the calling thread."""
    data = encode_png(img)
    info = store.put(key, data, content_type="image/png")
    width, height = _size(img)
    ref = common_pb2.ImageRef(sha256=info.sha256, width=width, height=height, media_type="image/png")
    if inline:
        # ImageRef.source is a oneof: the caller gets the bytes, and the stored copy (same bytes,
        # same sha256) stays for retries and later stages. One encode serves both.
        ref.inline_data = data
    else:
        ref.uri = info.uri
    return ref


async def store_image(
    store: ObjectStore, key: str, img: Image.Image | np.ndarray, *, inline: bool = False
) -> common_pb2.ImageRef:
    """Encode as PNG, store under ``key`` and return its reference (sha256 + size, and the URI,
    or with ``inline`` the PNG bytes themselves)."""
    return await asyncio.to_thread(store_image_sync, store, key, img, inline=inline)


def read_image_sync(
    store: ObjectStore, ref: common_pb2.ImageRef, max_pixels: int, max_inline_bytes: int = 16 << 20
) -> Image.Image:
    which = ref.WhichOneof("source")
    if which == "inline_data":
        if len(ref.inline_data) > max_inline_bytes:
            raise InvalidArgument(
                f"inline image is {len(ref.inline_data):,} bytes, over {max_inline_bytes:,}; "
                "upload it to the object store and send its uri"
            )
        data = ref.inline_data
        if ref.sha256 and sha256_hex(data) != ref.sha256.lower():
            raise InvalidArgument("inline image does not match its sha256")
    elif which == "uri":
        try:
            key = store.key_from_uri(ref.uri)
        except ValueError as exc:
            raise InvalidArgument(f"image uri {ref.uri!r}: {exc}") from None
        data = store.get(key, ref.sha256 or None)
    else:
        raise InvalidArgument("image reference is empty: set uri or inline_data")
    return decode_image(data, max_pixels)


async def read_image(
    store: ObjectStore, ref: common_pb2.ImageRef, max_pixels: int, max_inline_bytes: int = 16 << 20
) -> Image.Image:
    """Resolve an ImageRef (inline or by URI, hash-checked) and decode it with the guards."""
    return await asyncio.to_thread(read_image_sync, store, ref, max_pixels, max_inline_bytes)
