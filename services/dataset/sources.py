"""Readers of each source's published metadata: Open Images CSVs, WikiArt parquet, a URL list.

Each reader yields :class:`Candidate` items (what to collect, with its licence and credits) and
:class:`Rejected` rows (a row that cannot be used: the reason goes to the report). Readers stream
their files -- Open Images' image list is 9 million rows -- and never hold more than one parquet
row group of image bytes.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganfolk.runtime.hashing import sha256_hex

__all__ = [
    "HUMAN_FACE",
    "OPEN_IMAGES_BOX_COLUMNS",
    "OPEN_IMAGES_COLUMNS",
    "URL_COLUMNS",
    "Candidate",
    "FaceBoxes",
    "MissingColumns",
    "Rejected",
    "WikiArtFilter",
    "open_images",
    "read_face_boxes",
    "url_list",
    "wikiart",
]

log = logging.getLogger(__name__)

HUMAN_FACE = "/m/0dzct"  # Open Images' MID of the "Human face" class
OPEN_IMAGES_COLUMNS = ("ImageID", "OriginalURL", "License", "Author", "Title")
OPEN_IMAGES_BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsGroupOf")
URL_COLUMNS = ("url", "licence", "author")
_URL_OPTIONAL = ("title", "source_page")
_SPELLINGS = {"license": "licence"}
_YEAR = re.compile(r"(?<!\d)(1[0-9]{3}|20[0-9]{2})(?!\d)")


class MissingColumns(ValueError):
    """A metadata file lacks required columns; the message names the file and the columns."""

    def __init__(self, path: str, missing: Iterable[str], found: Iterable[str]) -> None:
        missing = list(missing)
        super().__init__(
            f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(it has: {', '.join(found) or 'no header'})"
        )
        self.missing = missing


@dataclass
class Candidate:
    """One item a source offers, before anything is downloaded."""

    item_id: str  # stable across runs: resumption keys on it
    licence: str  # as the source wrote it
    author: str
    title: str
    source_page: str
    source_url: str  # where the bytes come from (a URL, or the dump file and row)
    url: str | None = None  # to download; None when the bytes come with the metadata
    data: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rejected:
    """A metadata row that cannot become an item."""

    category: str
    reason: str
    item_id: str | None = None


def _reader(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> tuple[csv.DictReader[str], Any]:
    """A DictReader whose header names are the canonical ones (any case; ``license`` spelling)."""
    f = path.open(newline="", encoding="utf-8-sig")
    reader = csv.DictReader(f)
    canonical = {c.lower(): c for c in (*required, *optional)}
    header = []
    for h in reader.fieldnames or []:
        name = _SPELLINGS.get(h.strip().lower(), h.strip().lower())
        header.append(canonical.get(name, h.strip()))
    reader.fieldnames = header
    missing = [c for c in required if c not in header]
    if missing:
        f.close()
        raise MissingColumns(str(path), missing, header)
    return reader, f


# --------------------------------------------------------------------------- Open Images


@dataclass
class FaceBoxes:
    """Per image: how many "Human face" boxes, and the widest one's width as a share of the image."""

    count: int = 0
    widest: float = 0.0
    group: bool = False  # a box that stands for several faces


def read_face_boxes(paths: Iterable[Path], label: str = HUMAN_FACE) -> tuple[dict[str, FaceBoxes], int]:
    """Face boxes per ImageID from bounding-box CSVs, and the number of unreadable rows."""
    boxes: dict[str, FaceBoxes] = {}
    bad = 0
    for path in paths:
        reader, f = _reader(path, OPEN_IMAGES_BOX_COLUMNS)
        with f:
            for row in reader:
                if row.get("LabelName") != label:
                    continue
                try:
                    width = float(row["XMax"]) - float(row["XMin"])
                    group = row.get("IsGroupOf", "0").strip() == "1"
                except (TypeError, ValueError):
                    bad += 1
                    continue
                entry = boxes.setdefault(row["ImageID"], FaceBoxes())
                entry.count += 1
                entry.widest = max(entry.widest, width)
                entry.group |= group
    return boxes, bad


def _rotation(value: str | None) -> int:
    try:
        r = float(value or 0)
    except ValueError:
        return 0
    return 0 if math.isnan(r) else int(r) % 360


def open_images(
    images_csv: Path,
    box_csvs: list[Path],
    *,
    max_faces: int = 1,
    min_face_width: float = 0.0,
) -> Iterator[Candidate | Rejected]:
    """Open Images rows whose image has 1..``max_faces`` "Human face" boxes (no group box), the
    widest at least ``min_face_width`` of the image width. With no box CSVs every row qualifies."""
    boxes, bad = read_face_boxes(box_csvs) if box_csvs else ({}, 0)
    if bad:
        yield Rejected("corrupt row", f"{bad} unreadable rows in the bounding-box CSVs")
    reader, f = _reader(
        images_csv, OPEN_IMAGES_COLUMNS, ("OriginalLandingURL", "AuthorProfileURL", "Rotation", "OriginalMD5")
    )
    with f:
        for line, row in enumerate(reader, start=2):
            image_id = (row.get("ImageID") or "").strip()
            if not image_id or not re.fullmatch(r"[0-9A-Za-z_-]+", image_id):
                yield Rejected("corrupt row", f"{images_csv.name} line {line}: bad ImageID {image_id!r}")
                continue
            if box_csvs:
                b = boxes.get(image_id)
                if b is None or b.count == 0:
                    continue  # not a face photo: not an item at all, so not counted
                if b.group or b.count > max_faces or b.widest < min_face_width:
                    continue
            url = (row.get("OriginalURL") or "").strip()
            if not url:
                yield Rejected("missing url", f"{images_csv.name} line {line}: no OriginalURL", image_id)
                continue
            yield Candidate(
                item_id=f"oi-{image_id}",
                licence=row.get("License") or "",
                author=(row.get("Author") or "").strip(),
                title=(row.get("Title") or "").strip(),
                source_page=(row.get("OriginalLandingURL") or "").strip(),
                source_url=url,
                url=url,
                extra={
                    "open_images_id": image_id,
                    "author_profile": (row.get("AuthorProfileURL") or "").strip(),
                    "rotation": _rotation(row.get("Rotation")),
                    "original_md5": (row.get("OriginalMD5") or "").strip(),
                },
            )


# --------------------------------------------------------------------------- WikiArt parquet


@dataclass(frozen=True)
class WikiArtFilter:
    genres: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()
    artists: tuple[str, ...] = ()
    after: int | None = None  # earliest year kept
    before: int | None = None  # latest year kept


def _norm_label(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name).strip().lower()


def class_names(schema_metadata: dict[bytes, bytes] | None) -> dict[str, list[str]]:
    """Column -> class names of every ClassLabel column in a parquet's ``huggingface`` metadata."""
    raw = (schema_metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        features = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return {}
    return {
        column: list(spec["names"])
        for column, spec in features.items()
        if isinstance(spec, dict) and spec.get("_type") == "ClassLabel" and "names" in spec
    }


def _pretty_artist(slug: str) -> str:
    if not slug or " " in slug or slug.lower().startswith("unknown"):
        return slug
    small = {"van", "von", "de", "der", "den", "da", "di", "du", "la", "le", "del", "della", "y"}
    words = slug.split("-")
    return " ".join(w if (i and w in small) else w[:1].upper() + w[1:] for i, w in enumerate(words))


def _resolve(wanted: tuple[str, ...], names: list[str] | None, what: str, path: str) -> set[int] | None:
    if not wanted:
        return None
    if names is None:
        raise ValueError(f"{path}: no {what} class names in the parquet's metadata; cannot filter by {what}")
    index = {_norm_label(n): i for i, n in enumerate(names)}
    unknown = [w for w in wanted if _norm_label(w) not in index]
    if unknown:
        raise ValueError(f"{path}: unknown {what} {', '.join(unknown)}; the dump has: {', '.join(names)}")
    return {index[_norm_label(w)] for w in wanted}


def _label(value: Any, names: list[str] | None) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if names is not None and 0 <= int(value) < len(names):
        return names[int(value)]
    raise ValueError(f"class label {value} out of range")


def _year(row: dict[str, Any], path_hint: str) -> int | None:
    for key in ("year", "date", "completion_year", "completionYear"):
        value = row.get(key)
        if value is not None and (m := _YEAR.search(str(value))):
            return int(m.group(1))
    if m := _YEAR.search(Path(path_hint).stem.rpartition("_")[2]):
        return int(m.group(1))
    return None


def wikiart(
    parquets: list[Path],
    flt: WikiArtFilter,
    *,
    dataset_url: str = "https://huggingface.co/datasets/huggan/wikiart",
) -> Iterator[Candidate | Rejected]:
    """Paintings from parquet files in the public WikiArt dump's layout.

    Columns: ``image`` (struct of ``bytes`` and ``path``), ``artist``, ``genre`` and ``style`` as
    integer class labels named in the schema's ``huggingface`` metadata (or as strings), and
    optionally a ``date``/``year`` column. A year is also read from the image path's
    ``<artist>_<title-slug>-<year>`` form when there is one. A file that is no parquet, a row group
    that will not decode and a row without bytes or with a label out of range are rejected and
    counted; the rest of the file is still read.
    """
    import pyarrow.parquet as pq  # only WikiArt collection needs it

    for path in parquets:
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:
            yield Rejected("corrupt parquet", f"{path}: not a readable parquet file ({exc})")
            continue
        names = class_names(pf.schema_arrow.metadata)
        columns = set(pf.schema_arrow.names)
        missing = [c for c in ("image", "artist", "genre", "style") if c not in columns]
        if missing:
            raise MissingColumns(str(path), missing, sorted(columns))
        genres = _resolve(flt.genres, names.get("genre"), "genre", str(path))
        styles = _resolve(flt.styles, names.get("style"), "style", str(path))
        artists = _resolve(flt.artists, names.get("artist"), "artist", str(path))
        row_index = 0
        for group in range(pf.num_row_groups):
            rows_in_group = pf.metadata.row_group(group).num_rows
            try:
                table = pf.read_row_group(group)
                records = table.to_pylist()
            except Exception as exc:
                yield Rejected(
                    "corrupt parquet",
                    f"{path.name} row group {group}: {rows_in_group} rows unreadable ({exc})",
                )
                row_index += rows_in_group
                continue
            for row in records:
                n = row_index
                row_index += 1
                item_id = f"wa-{re.sub(r'[^A-Za-z0-9_-]+', '-', path.stem)}-{n:06d}"
                try:
                    genre_i, style_i, artist_i = row.get("genre"), row.get("style"), row.get("artist")
                    if genres is not None and genre_i not in genres:
                        continue
                    if styles is not None and style_i not in styles:
                        continue
                    if artists is not None and artist_i not in artists:
                        continue
                    artist = _label(artist_i, names.get("artist"))
                    genre = _label(genre_i, names.get("genre"))
                    style = _label(style_i, names.get("style"))
                    image = row.get("image") or {}
                    data = image.get("bytes") if isinstance(image, dict) else None
                    if not data:
                        raise ValueError("no image bytes")
                except (ValueError, TypeError) as exc:
                    yield Rejected("corrupt row", f"{path.name} row {n}: {exc}", item_id)
                    continue
                hint = str(image.get("path") or "")
                year = _year(row, hint)
                if flt.after is not None or flt.before is not None:
                    if year is None:
                        yield Rejected("no date", f"{path.name} row {n}: no year to filter on", item_id)
                        continue
                    if (flt.after is not None and year < flt.after) or (
                        flt.before is not None and year > flt.before
                    ):
                        continue
                slug = Path(hint).stem.partition("_")[2] if "_" in Path(hint).stem else ""
                title = str(row.get("title") or "") or (
                    re.sub(r"-\d{4}$", "", slug).replace("-", " ").capitalize() if slug else ""
                )
                page = f"https://www.wikiart.org/en/{artist}/{slug}" if slug and " " not in artist else ""
                yield Candidate(
                    item_id=item_id,
                    licence=str(row.get("licence") or row.get("license") or ""),
                    author=_pretty_artist(artist),
                    title=title,
                    source_page=page,
                    source_url=f"{dataset_url}#{path.name}:{n}",
                    data=bytes(data),
                    extra={"artist": artist, "genre": genre, "style": style, "year": year, "path": hint},
                )


# --------------------------------------------------------------------------- a CSV of URLs


def url_list(path: Path) -> Iterator[Candidate | Rejected]:
    """Rows of ``url,licence,author[,title,source_page]`` (``license`` is accepted too)."""
    reader, f = _reader(path, URL_COLUMNS, _URL_OPTIONAL)
    with f:
        for line, row in enumerate(reader, start=2):
            url = (row.get("url") or "").strip()
            if not url:
                yield Rejected("missing url", f"{path.name} line {line}: empty url")
                continue
            yield Candidate(
                item_id=f"url-{sha256_hex(url.encode())[:16]}",
                licence=(row.get("licence") or "").strip(),
                author=(row.get("author") or "").strip(),
                title=(row.get("title") or "").strip(),
                source_page=(row.get("source_page") or "").strip(),
                source_url=url,
                url=url,
            )
