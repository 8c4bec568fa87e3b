"""What a collection or a prepared set holds: counts, licences, and a contact sheet.

``ganfolk dataset show`` reads either kind of location. A prepared set is described from its
``dataset.json``; collections from their item records. The contact sheet is a grid of a seeded
random sample with a coloured strip under each tile naming its source, and the per-source counts
written across the top.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ganfolk.runtime.images import decode_image, encode_png
from ganfolk.runtime.storage import ObjectNotFound
from services.dataset.location import Location
from services.dataset.records import DATASET_JSON, discover_sources, load_records

__all__ = ["Summary", "contact_sheet", "render_sheet", "summarise"]

TILE = 128
COLUMNS = 8
MAX_TILES = 64
_HEADER = 28
_STRIP = 6
# Distinct, colour-blind-safe (Okabe-Ito) strip colours, one per source in order.
_COLOURS = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0)]
# Thumbnails are small; anything decodable that large is only a guard against bombs.
_THUMB_MAX_PIXELS = 100_000_000


def render_sheet(tiles: Sequence[tuple[str, Image.Image]], counts: dict[str, int], title: str = "") -> bytes:
    """A PNG grid of ``tiles`` (source, picture) under a header of ``counts`` per source."""
    sources = list(counts)
    colour = {s: _COLOURS[i % len(_COLOURS)] for i, s in enumerate(sources)}
    cols = max(1, min(COLUMNS, len(tiles)))
    rows = max(1, -(-len(tiles) // cols))
    sheet = Image.new("RGB", (cols * TILE, _HEADER + rows * (TILE + _STRIP)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    x = 6
    if title:
        draw.text((x, 8), title, fill=(235, 235, 235), font=font)
        x += int(draw.textlength(title, font=font)) + 14
    for s in sources:
        draw.rectangle((x, 10, x + 10, 20), fill=colour[s])
        label = f"{s}: {counts[s]:,}"
        draw.text((x + 14, 8), label, fill=(235, 235, 235), font=font)
        x += 14 + int(draw.textlength(label, font=font)) + 14
    for i, (source, img) in enumerate(tiles):
        r, c = divmod(i, cols)
        top = _HEADER + r * (TILE + _STRIP)
        thumb = ImageOps.fit(img.convert("RGB"), (TILE, TILE), Image.Resampling.LANCZOS)
        sheet.paste(thumb, (c * TILE, top))
        draw.rectangle(
            (c * TILE, top + TILE, (c + 1) * TILE - 1, top + TILE + _STRIP - 1), fill=colour.get(source)
        )
    return encode_png(sheet)


def _sample(items: list[Any], seed: int, limit: int = MAX_TILES) -> list[Any]:
    if len(items) <= limit:
        return list(items)
    return random.Random(seed).sample(items, limit)


def contact_sheet(
    location: Location, rows: Sequence[dict[str, Any]], *, seed: int = 0, title: str = ""
) -> bytes:
    """Contact sheet of a prepared set's ``dataset.json`` rows."""
    counts = Counter(r["source"] for r in rows)
    picked = sorted(_sample(list(rows), seed), key=lambda r: (r["source"], r["file"]))
    tiles = [
        (r["source"], decode_image(location.get(r["file"], r.get("sha256")), _THUMB_MAX_PIXELS))
        for r in picked
    ]
    return render_sheet(tiles, dict(sorted(counts.items())), title)


@dataclass
class Summary:
    """Counts of a location: images per source, licences, and (collections) failures."""

    location: str
    kind: str  # "prepared" or "collections"
    per_source: Counter[str] = field(default_factory=Counter)
    licences: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)
    sheet_uri: str = ""

    def text(self) -> str:
        total = sum(self.per_source.values())
        lines = [f"{self.location}: {self.kind}, {total:,} images"]
        for k, v in self.extra.items():
            lines.append(f"  {k}: {v}")
        lines.append("  per source:")
        lines += [f"    {s:<24}{n:>8}" for s, n in sorted(self.per_source.items())]
        lines.append("  licences:")
        lines += [f"    {lic:<24}{n:>8}" for lic, n in self.licences.most_common()]
        if self.failed:
            lines.append("  not collected (kept in items/ so reruns skip them):")
            lines += [f"    {c:<24}{n:>8}" for c, n in self.failed.most_common()]
        if self.sheet_uri:
            lines.append(f"  contact sheet: {self.sheet_uri}")
        return "\n".join(lines)


def summarise(
    location: Location,
    *,
    sheet: bool = True,
    seed: int = 0,
) -> Summary:
    """Describe a prepared set (it has ``dataset.json``) or the collections under ``location``.

    With ``sheet``, writes ``contact_sheet.png`` into ``location``.
    """
    try:
        manifest = json.loads(location.get(DATASET_JSON))
    except ObjectNotFound:
        manifest = None
    if manifest is not None:
        rows = manifest.get("images", [])
        s = Summary(location.url, "prepared")
        s.per_source.update(r["source"] for r in rows)
        s.licences.update(r["record"].get("licence", "?") for r in rows)
        s.extra = {
            "size": f"{manifest.get('size')} px",
            "inpainting": manifest.get("inpainting"),
            "created": manifest.get("created_at"),
        }
        if sheet and rows:
            s.sheet_uri = location.put(
                "contact_sheet.png", contact_sheet(location, rows, seed=seed), "image/png"
            ).uri
        return s
    sources = discover_sources(location)
    if not sources:
        raise FileNotFoundError(f"{location}: neither a prepared set (dataset.json) nor collections (items/)")
    s = Summary(location.url, "collections")
    done: list[tuple[str, Location, dict[str, Any]]] = []
    for name, loc in sources.items():
        for r in load_records(loc).values():
            if r.get("state") == "done":
                s.per_source[name] += 1
                s.licences[r.get("licence", "?")] += 1
                done.append((name, loc, r))
            else:
                s.failed[r.get("category", "?")] += 1
    if sheet and done:
        picked = sorted(
            _sample(sorted(done, key=lambda t: (t[0], t[2]["id"])), seed), key=lambda t: (t[0], t[2]["id"])
        )
        tiles = []
        for name, loc, r in picked:
            img = decode_image(loc.get(r["image"], r.get("sha256")), _THUMB_MAX_PIXELS)
            if r.get("rotate"):
                img = Image.fromarray(np.rot90(np.asarray(img), k=int(r["rotate"]) // 90))
            tiles.append((name, img))
        s.sheet_uri = location.put(
            "contact_sheet.png", render_sheet(tiles, dict(sorted(s.per_source.items()))), "image/png"
        ).uri
    return s
