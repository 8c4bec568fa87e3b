"""Images in and out of services: decode with guards, resolve ImageRefs, store PNGs.

Every service reads images through :func:`read_image` and writes them through
:func:`store_image`, so the size guard, the hash check and the ImageRef fields are the
same everywhere.
"""

from __future__ import annotations

import asyncio
import io
import re
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


# Pillow's messages may quote the bytes they stopped at (a PNG chunk tag: b'...'); cut them, so
# that an error never carries a byte of the file.
_BYTES_LITERAL = re.compile(r"""\bb(['"])(?:\\.|(?!\1).)*\1""")


def _without_bytes(exc: Exception) -> str:
    return _BYTES_LITERAL.sub("<bytes>", str(exc)) or type(exc).__name__


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
        # The bytes themselves are never quoted: they may be any file's content (a secret).
        raise InvalidArgument(
            f"not an image: {len(data):,} bytes that are not PNG, JPEG, WebP or another format Pillow reads"
        ) from None
    except Exception as exc:
        raise InvalidArgument(f"corrupt image header: {_without_bytes(exc)}") from None
    with img:
        _check_size(img.format or "image", *img.size, max_pixels)
        try:
            img.load()
            upright = ImageOps.exif_transpose(img) or img
            return upright.convert("RGB")
        except Exception as exc:
            raise InvalidArgument(
                f"corrupt image: {img.format} {img.size[0]}x{img.size[1]}: {_without_bytes(exc)}"
            ) from None


def decode_array(data: bytes, max_pixels: int) -> np.ndarray:
    """:func:`decode_image` as an (H, W, 3) uint8 array."""
    return np.asarray(decode_image(data, max_pixels), dtype=np.uint8).copy()


# Outputs are written as PNG with zlib level 1, run-length matching only, and the "Up" row
# filter on every row, by the few lines below rather than Pillow: Pillow picks a filter per
# row by trying all five (about half its encode time) and its default level 6 searches for
# long matches that filtered photo residuals rarely have. A 512 px face: ~7 ms instead of
# ~60-85 ms at Pillow's defaults, ~5% larger; encoding sits on the critical path of every
# task that returns an image, and zlib lets go of the GIL while it compresses.
PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grey, RGB, RGBA
_PNG_FILTER_UP = 2


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _fast_png(pixels: np.ndarray) -> bytes | None:
    """PNG bytes of an 8-bit grey, RGB or RGBA array; None for anything else."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or 0 in pixels.shape:
        return None
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels not in _PNG_COLOUR_TYPES:
        return None
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = _PNG_FILTER_UP
    filtered[0, 1:] = rows[0]  # the row above the first counts as zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 wraps: PNG's arithmetic mod 256
    deflate = zlib.compressobj(PNG_COMPRESS_LEVEL, zlib.DEFLATED, 15, 8, PNG_STRATEGY)
    idat = deflate.compress(filtered.data) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (_PNG_SIGNATURE, _png_chunk(b"IHDR", header), _png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b""))
    )


def encode_png(img: Image.Image | np.ndarray) -> bytes:
    """Lossless PNG bytes of an image or an (H, W[, C]) uint8 array."""
    if isinstance(img, np.ndarray):
        data = _fast_png(img)
        if data is not None:
            return data
        img = Image.fromarray(img)
    elif img.mode in ("L", "RGB", "RGBA") and "icc_profile" not in img.info:
        # Pillow would carry an ICC profile over; a plain image needs nothing but its pixels.
        data = _fast_png(np.asarray(img))
        if data is not None:
            return data
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
