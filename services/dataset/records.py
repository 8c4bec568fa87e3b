"""The per-item records a collection keeps, and the counters every command reports.

A collection location holds ``images/<id>.<ext>`` (the bytes exactly as downloaded),
``items/<id>.json`` (one record per item: its state, and for a collected image its source URL,
licence, author, title, source page, sha256 and collection date) and ``collection.json`` (the
last run's summary). The item records are the manifest: each is written once its image is
stored, so a killed run loses at most the items in flight, and a rerun skips every item whose
record says it is done.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ganfolk.runtime.storage import ObjectNotFound
from services.dataset.location import Location

__all__ = [
    "COLLECTION",
    "DATASET_JSON",
    "IMAGES",
    "ITEMS",
    "Tally",
    "discover_sources",
    "load_records",
    "now",
    "put_json",
]

ITEMS = "items"
IMAGES = "images"
COLLECTION = "collection.json"
DATASET_JSON = "dataset.json"  # a prepared set's manifest
_READ_THREADS = 16  # record reads are small GETs: latency-bound, not CPU-bound


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def put_json(location: Location, rel: str, data: Any) -> str:
    """Write ``data`` as indented JSON under ``rel``; returns its URI."""
    body = json.dumps(data, indent=1, ensure_ascii=False, sort_keys=False).encode()
    return location.put(rel, body, "application/json").uri


def load_records(location: Location) -> dict[str, dict[str, Any]]:
    """Every item record of a collection, by item id (unreadable records are left out)."""
    keys = [info.key for info in location.objects(ITEMS) if info.key.endswith(".json")]

    def read(key: str) -> dict[str, Any] | None:
        try:
            record = json.loads(location.store.get(key))
        except (ObjectNotFound, ValueError):
            return None
        return record if isinstance(record, dict) and "id" in record else None

    with ThreadPoolExecutor(_READ_THREADS) as pool:
        records = [r for r in pool.map(read, keys) if r is not None]
    return {r["id"]: r for r in records}


@dataclass
class Tally:
    """Counts of a run: what passed, and per reason what did not, optionally per source."""

    kept: Counter[str] = field(default_factory=Counter)
    dropped: dict[str, Counter[str]] = field(default_factory=dict)

    def keep(self, source: str = "", n: int = 1) -> None:
        self.kept[source] += n

    def drop(self, reason: str, source: str = "", n: int = 1) -> None:
        self.dropped.setdefault(reason, Counter())[source] += n

    def merge(self, other: Tally) -> None:
        self.kept.update(other.kept)
        for reason, counts in other.dropped.items():
            self.dropped.setdefault(reason, Counter()).update(counts)

    def dropped_total(self) -> int:
        return sum(sum(c.values()) for c in self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "kept": dict(self.kept),
            "dropped": {reason: dict(c) for reason, c in sorted(self.dropped.items())},
        }

    def lines(self, sources: Iterable[str] = ("",)) -> list[str]:
        """Report lines: one per reason, with a column per source when there are several."""
        names = list(sources)
        out = []
        width = max([len(r) for r in self.dropped] + [12])
        if len(names) > 1:
            out.append(f"  {'':<{width}}  " + "  ".join(f"{n:>10}" for n in names))
            out.append(f"  {'kept':<{width}}  " + "  ".join(f"{self.kept[n]:>10}" for n in names))
            for reason, c in sorted(self.dropped.items()):
                out.append(f"  {reason:<{width}}  " + "  ".join(f"{c[n]:>10}" for n in names))
        else:
            for reason, c in sorted(self.dropped.items()):
                out.append(f"  {reason:<{width}}  {sum(c.values()):>8}")
        return out


def discover_sources(location: Location) -> dict[str, Location]:
    """Source name -> collection: the location itself when it is one, else its sub-folders that are."""
    if any(True for _ in location.objects(ITEMS)):
        name = location.url.rstrip("/").rsplit("/", 1)[-1] or "source"
        return {name: location}
    return {name: location.child(name) for name in location.children_with(ITEMS)}
