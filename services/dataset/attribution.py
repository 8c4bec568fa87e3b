"""ATTRIBUTION.md and attribution.csv: every image's author, title, licence and source.

CC BY and CC BY-SA require credit, a link to the licence and a note of changes; a collection
built on these images links to the files this writes. They list a prepared set's images (from
its ``dataset.json``) or, for collections, every collected image.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any

from ganfolk.runtime.storage import ObjectNotFound
from services.dataset.licences import licence_url
from services.dataset.location import Location
from services.dataset.records import DATASET_JSON, discover_sources, load_records, now

__all__ = ["COLUMNS", "attribution_rows", "render_csv", "render_markdown", "write_attribution"]

COLUMNS = ("file", "title", "author", "licence", "licence_url", "source_page", "source_url", "source")
_CHANGES = (
    "Each image was cropped and rotated around the face (68-point landmarks), resized, and the area "
    "the rotation left outside the original picture was filled by inpainting."
)


def attribution_rows(location: Location) -> tuple[list[dict[str, str]], bool]:
    """One row per image, and whether they come from a prepared set (else from collections)."""
    try:
        manifest = json.loads(location.get(DATASET_JSON))
    except ObjectNotFound:
        manifest = None
    pairs: list[tuple[str, str, dict[str, Any]]] = []
    if manifest is not None:
        pairs = [(row["file"], row["source"], row["record"]) for row in manifest.get("images", [])]
    else:
        for name, loc in discover_sources(location).items():
            for r in sorted(load_records(loc).values(), key=lambda r: r["id"]):
                if r.get("state") == "done":
                    pairs.append((f"{name}/{r['image']}", name, r))
    rows = []
    for file, source, r in pairs:
        lic = str(r.get("licence", ""))
        rows.append(
            {
                "file": file,
                "title": str(r.get("title") or "Untitled"),
                "author": str(r.get("author") or "Unknown"),
                "licence": lic,
                "licence_url": licence_url(lic),
                "source_page": str(r.get("source_page") or ""),
                "source_url": str(r.get("source_url") or ""),
                "source": source,
            }
        )
    return rows, manifest is not None


def render_csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _md(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("\n", " ")
        .replace("[", "\\[")
        .replace("]", "\\]")
    )


def render_markdown(rows: list[dict[str, str]], where: str, prepared: bool) -> str:
    licences = Counter(r["licence"] for r in rows)
    lines = [
        "# Attribution",
        "",
        f"{len(rows):,} images in `{where}`, listed {now()}.",
        "",
        "| licence | images |",
        "|---|---|",
        *(f"| [{_md(lic)}]({licence_url(lic)}) | {n:,} |" for lic, n in licences.most_common()),
        "",
    ]
    if prepared:
        lines += [f"Changes: {_CHANGES}", ""]
    lines += ["| image | title | author | licence | source |", "|---|---|---|---|---|"]
    for r in rows:
        page = r["source_page"] or r["source_url"]
        link = (
            f"[{_md(r['source'])}]({page})"
            if page.startswith(("http://", "https://"))
            else _md(page or r["source"])
        )
        lic = f"[{_md(r['licence'])}]({r['licence_url']})" if r["licence_url"] else _md(r["licence"])
        lines.append(f"| `{r['file']}` | {_md(r['title'])} | {_md(r['author'])} | {lic} | {link} |")
    return "\n".join(lines) + "\n"


def write_attribution(location: Location, out: Location | None = None) -> tuple[str, str, int]:
    """Write ATTRIBUTION.md and attribution.csv into ``out`` (default: ``location``)."""
    rows, prepared = attribution_rows(location)
    target = out or location
    md = target.put(
        "ATTRIBUTION.md", render_markdown(rows, location.url, prepared).encode(), "text/markdown"
    ).uri
    csv_uri = target.put("attribution.csv", render_csv(rows).encode(), "text/csv").uri
    return md, csv_uri, len(rows)
