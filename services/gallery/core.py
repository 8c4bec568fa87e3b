"""The gallery's own work, without HTTP or gRPC: thumbnails, contact sheets, proofreading CSVs.

Images arrive as bytes from the coordinator (verified against their sha256 there); they are
decoded here with the runtime's pixel limit, so a corrupt or oversized object becomes a clear
error instead of a crash. Thumbnails are cached by (sha256, size): an image's hash names its
content, so a cached thumbnail can never be stale.
"""

from __future__ import annotations

import csv
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from ganfolk.runtime.errors import InvalidArgument

THUMBNAIL_SIZES = (128, 256, 512)
CSV_COLUMNS = ("job_id", "state", "prompt", "first_name", "last_name", "backstory")


class ImageUnreadable(RuntimeError):
    """Bytes that are not a decodable image (a corrupt object in the store)."""


def decode(data: bytes, max_pixels: int) -> Image.Image:
    """An RGB image from PNG/JPEG bytes; ImageUnreadable when they are not one."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                raise ImageUnreadable(
                    f"{image.width}x{image.height} px is over the {max_pixels:,} pixel limit"
                )
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageUnreadable(f"not a readable image ({exc})") from None


def thumbnail(data: bytes, size: int, max_pixels: int) -> bytes:
    """A PNG no larger than ``size`` px on its longer side."""
    if size not in THUMBNAIL_SIZES:
        raise InvalidArgument(
            f"size {size} is not offered; use one of {', '.join(map(str, THUMBNAIL_SIZES))}"
        )
    image = decode(data, max_pixels)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


class ThumbnailCache:
    """A byte-bounded LRU of thumbnails keyed by (sha256, size); thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, sha256: str, size: int) -> bytes | None:
        with self._lock:
            found = self._items.get((sha256, size))
            if found is not None:
                self._items.move_to_end((sha256, size))
            return found

    def put(self, sha256: str, size: int, data: bytes) -> None:
        if not sha256 or len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop((sha256, size), None)
            self._bytes -= len(old) if old else 0
            self._items[(sha256, size)] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)


@dataclass(frozen=True)
class SheetEntry:
    """One portrait on a contact sheet: its image (None when unavailable) and caption."""

    image: bytes | None
    caption: str
    detail: str


def contact_sheet(entries: list[SheetEntry], max_pixels: int, title: str, cell: int = 256) -> bytes:
    """A PNG grid of the portraits with their names and states, for proofreading offline."""
    columns = max(1, min(4, len(entries)))
    rows = max(1, -(-len(entries) // columns))
    pad, caption_h, title_h = 12, 40, 36
    width = columns * (cell + pad) + pad
    height = title_h + rows * (cell + caption_h + pad) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    draw.text((pad, pad), title[:120], fill="black", font=font)
    for i, entry in enumerate(entries):
        x = pad + (i % columns) * (cell + pad)
        y = title_h + (i // columns) * (cell + caption_h + pad)
        tile: Image.Image | None = None
        if entry.image is not None:
            try:
                tile = decode(entry.image, max_pixels)
                tile.thumbnail((cell, cell), Image.Resampling.LANCZOS)
            except ImageUnreadable:
                tile = None
        if tile is None:
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline="grey", fill="#eeeeee")
            draw.text((x + 8, y + cell // 2), "image unavailable", fill="black", font=font)
        else:
            sheet.paste(tile, (x + (cell - tile.width) // 2, y + (cell - tile.height) // 2))
        draw.text((x, y + cell + 4), entry.caption[:40], fill="black", font=font)
        draw.text((x, y + cell + 20), entry.detail[:40], fill="#444444", font=font)
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=True)
    return out.getvalue()


def export_csv(rows: list[dict[str, str]]) -> str:
    """Names and backstories as CSV (one portrait a row) for proofreading in a spreadsheet."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        # A leading =, +, - or @ makes spreadsheets run the cell as a formula: quote it as text.
        writer.writerow({k: _inert(str(row.get(k, ""))) for k in CSV_COLUMNS})
    return out.getvalue()


def _inert(value: str) -> str:
    return f"'{value}" if value[:1] in ("=", "+", "-", "@") else value


def _restore(value: str) -> str:
    return value[1:] if value[:2] in ("'=", "'+", "'-", "'@") else value


@dataclass(frozen=True)
class ImportedRow:
    """A proofread row: the job and the name and backstory as the reviewer left them."""

    line: int
    job_id: str
    first_name: str
    last_name: str
    backstory: str


def import_csv(data: bytes, max_rows: int = 1000) -> list[ImportedRow]:
    """Rows of a CSV written by :func:`export_csv` and edited offline (InvalidArgument when it
    is not one: wrong columns, not UTF-8, too many rows)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidArgument("the file is not UTF-8 text; save the CSV as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    needed = {"job_id", "first_name", "last_name", "backstory"}
    if reader.fieldnames is None or not needed <= set(reader.fieldnames):
        raise InvalidArgument(
            f"the CSV needs the columns {', '.join(sorted(needed))} (as exported); found "
            f"{', '.join(reader.fieldnames or []) or 'none'}"
        )
    rows: list[ImportedRow] = []
    for record in reader:
        if len(rows) >= max_rows:
            raise InvalidArgument(f"the CSV has more than {max_rows} rows")
        if not (record.get("job_id") or "").strip():
            continue
        rows.append(
            ImportedRow(
                line=reader.line_num,
                job_id=record["job_id"].strip(),
                first_name=_restore((record.get("first_name") or "").strip()),
                last_name=_restore((record.get("last_name") or "").strip()),
                backstory=_restore((record.get("backstory") or "").strip()),
            )
        )
    return rows
