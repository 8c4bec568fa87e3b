"""Images in and out of services: decode with guards, resolve ImageRefs, store PNGs.

Every service reads images through :func:`read_image` and writes them through
:func:`store_image`, so the size guard, the hash check and the ImageRef fields are the
same everywhere.
"""

from __future__ import annotations

import asyncio
import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from ganfolk.runtime.storage import ObjectStore, sha256_hex
from ganfolk.v1 import common_pb2

# Pillow's own bomb check would fire first with a vaguer message; decode_image checks the
# configured limit from the header, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode encoded image bytes to RGB, refusing empty, corrupt or oversized images.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing.
    """
    if not data:
        raise ValueError("image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width == 0 or height == 0:
                raise ValueError(f"image has zero size ({width}x{height})")
            if width * height > max_pixels:
                raise ValueError(
                    f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,}; downscale it first"
                )
            img.load()
    except ValueError:
        raise
    except UnidentifiedImageError:
        raise ValueError(
            "not an image: the bytes are not PNG, JPEG, WebP or another format Pillow reads"
        ) from None
    except (OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"corrupt image: {exc}") from None
    return img.convert("RGB")


def encode_png(img: Image.Image | np.ndarray) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def inline_ref(img: Image.Image | np.ndarray) -> common_pb2.ImageRef:
    data = encode_png(img)
    width, height = _size(img)
    return common_pb2.ImageRef(
        inline_data=data, sha256=sha256_hex(data), width=width, height=height, media_type="image/png"
    )


def _size(img: Image.Image | np.ndarray) -> tuple[int, int]:
    if isinstance(img, np.ndarray):
        return int(img.shape[1]), int(img.shape[0])
    return img.size


def store_image_sync(store: ObjectStore, key: str, img: Image.Image | np.ndarray) -> common_pb2.ImageRef:
    data = encode_png(img)
    info = store.put(key, data, content_type="image/png")
    width, height = _size(img)
    return common_pb2.ImageRef(
        uri=info.uri, sha256=info.sha256, width=width, height=height, media_type="image/png"
    )


async def store_image(store: ObjectStore, key: str, img: Image.Image | np.ndarray) -> common_pb2.ImageRef:
    """Encode as PNG, store under ``key`` and return its reference (URI + sha256 + size)."""
    return await asyncio.to_thread(store_image_sync, store, key, img)


def read_image_sync(
    store: ObjectStore, ref: common_pb2.ImageRef, max_pixels: int, max_inline_bytes: int = 16 << 20
) -> Image.Image:
    which = ref.WhichOneof("source")
    if which == "inline_data":
        if len(ref.inline_data) > max_inline_bytes:
            raise ValueError(
                f"inline image is {len(ref.inline_data):,} bytes, over {max_inline_bytes:,}; "
                "upload it to the object store and send its uri"
            )
        data = ref.inline_data
        if ref.sha256 and sha256_hex(data) != ref.sha256.lower():
            raise ValueError("inline image does not match its sha256")
    elif which == "uri":
        data = store.get_uri(ref.uri, ref.sha256 or None)
    else:
        raise ValueError("image reference is empty: set uri or inline_data")
    return decode_image(data, max_pixels)


async def read_image(
    store: ObjectStore, ref: common_pb2.ImageRef, max_pixels: int, max_inline_bytes: int = 16 << 20
) -> Image.Image:
    """Resolve an ImageRef (inline or by URI, hash-checked) and decode it with the guards."""
    return await asyncio.to_thread(read_image_sync, store, ref, max_pixels, max_inline_bytes)
