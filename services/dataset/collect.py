"""Collect images and their records from a source into a collection location.

:func:`collect` takes the candidates a reader of :mod:`services.dataset.sources` yields and, with
a bounded thread pool, checks each one's licence (before any download), downloads it with a
:class:`~services.dataset.fetch.Fetcher` (or takes the bytes a dump carries), decodes it under
the runtime's pixel guard, and stores the image and then its record (see
:mod:`services.dataset.records`). It stops when ``max_items`` images are collected in all runs
together; a rerun skips what is done and what failed for good, and retries what failed for a
reason that may pass (timeouts, 5xx).
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image
from tqdm import tqdm

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.hashing import sha256_hex
from ganfolk.runtime.images import decode_image
from services.dataset.fetch import Fetcher, FetchError, TransientFetchError
from services.dataset.licences import is_allowed, normalise_licence
from services.dataset.location import Location
from services.dataset.records import COLLECTION, IMAGES, ITEMS, Tally, load_records, now, put_json
from services.dataset.sources import Candidate, Rejected

__all__ = ["CollectOptions", "CollectReport", "collect"]

log = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


@dataclass(frozen=True)
class CollectOptions:
    kind: str  # "openimages", "wikiart" or "urls": recorded in every item
    max_items: int
    max_pixels: int
    allowed: tuple[str, ...] = ()  # licence allow-list; empty: every known licence
    default_licence: str = ""  # for rows without a licence (a dump of public-domain paintings)
    workers: int = 8
    retry_failed: bool = False  # also retry items that failed for good last time
    sources: tuple[str, ...] = ()  # the metadata files read, for the summary


@dataclass
class CollectReport:
    location: str
    kind: str
    wanted: int
    before: int  # collected by earlier runs
    now: int  # collected by this run
    tally: Tally = field(default_factory=Tally)

    @property
    def total(self) -> int:
        return self.before + self.now

    def text(self) -> str:
        lines = [
            f"collect {self.kind} -> {self.location}",
            f"  collected now      {self.now:>8}",
            f"  collected before   {self.before:>8}",
            f"  total              {self.total:>8} of {self.wanted} wanted",
        ]
        if self.tally.dropped:
            lines.append("  skipped, by reason:")
            lines += ["  " + line for line in self.tally.lines()]
        return "\n".join(lines)


@dataclass
class _Outcome:
    item_id: str
    state: str  # done | failed | skipped
    category: str = ""
    record: dict[str, Any] | None = None


def _image_facts(data: bytes, max_pixels: int) -> tuple[str, int, int, int]:
    """(format, width, height, EXIF orientation) after a full decode under the pixel guard."""
    upright = decode_image(data, max_pixels)
    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format or "image"
        orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    return fmt, upright.size[0], upright.size[1], orientation


def _category(message: str) -> str:
    if "over the limit" in message:
        return "over the pixel limit"
    if message.startswith("not an image"):
        return "not an image"
    if message.startswith("image is empty"):
        return "empty"
    return "corrupt image"


def _collect_one(cand: Candidate, location: Location, options: CollectOptions, fetcher: Fetcher) -> _Outcome:
    raw_licence = cand.licence or options.default_licence
    licence = normalise_licence(raw_licence)
    if licence is None:
        why = f"unknown licence {raw_licence!r}" if raw_licence else "no licence"
        return _Outcome(
            cand.item_id, "skipped", "unknown licence" if raw_licence else "no licence", {"reason": why}
        )
    if options.allowed and not is_allowed(licence, options.allowed):
        return _Outcome(cand.item_id, "skipped", "licence not allowed", {"reason": licence})

    def failed(category: str, reason: str, retry: bool) -> _Outcome:
        record = {
            "id": cand.item_id,
            "state": "failed",
            "source": options.kind,
            "source_url": cand.source_url,
            "category": category,
            "reason": reason,
            "retry": retry,
            "attempted_at": now(),
        }
        put_json(location, f"{ITEMS}/{cand.item_id}.json", record)
        return _Outcome(cand.item_id, "failed", category, record)

    if cand.data is not None:
        data = cand.data
    else:
        assert cand.url is not None
        try:
            data = fetcher.fetch(cand.url).data
        except TransientFetchError as exc:
            return failed(exc.category, str(exc), True)
        except FetchError as exc:
            return failed(exc.category, str(exc), False)
    try:
        fmt, width, height, orientation = _image_facts(data, options.max_pixels)
    except InvalidArgument as exc:
        return failed(_category(str(exc)), str(exc), False)
    ext = _EXTENSIONS.get(fmt, fmt.lower())
    image_rel = f"{IMAGES}/{cand.item_id}.{ext}"
    info = location.put(image_rel, data, Image.MIME.get(fmt, "application/octet-stream"))
    # Open Images' Rotation describes its re-encoded copies, which lost the EXIF orientation; an
    # original that still carries one is already turned upright by the decoder.
    rotation = int(cand.extra.get("rotation", 0) or 0)
    record = {
        "id": cand.item_id,
        "state": "done",
        "source": options.kind,
        "source_url": cand.source_url,
        "source_page": cand.source_page,
        "licence": licence,
        "licence_text": raw_licence,
        "author": cand.author,
        "title": cand.title,
        "image": image_rel,
        "sha256": info.sha256 or sha256_hex(data),
        "bytes": len(data),
        "format": fmt,
        "width": width,
        "height": height,
        "rotate": rotation if orientation == 1 else 0,
        "collected_at": now(),
        "extra": cand.extra,
    }
    put_json(location, f"{ITEMS}/{cand.item_id}.json", record)
    return _Outcome(cand.item_id, "done", "", record)


def collect(
    location: Location,
    candidates: Iterable[Candidate | Rejected],
    options: CollectOptions,
    fetcher: Fetcher | None = None,
    *,
    progress: bool = True,
) -> CollectReport:
    """Collect until ``options.max_items`` images are stored under ``location`` (all runs together)."""
    if options.max_items < 1:
        raise ValueError(f"max_items must be at least 1, got {options.max_items}")
    fetcher = fetcher or Fetcher()
    records = load_records(location)
    done = {i for i, r in records.items() if r.get("state") == "done"}
    settled = {
        i
        for i, r in records.items()
        if r.get("state") == "failed" and not r.get("retry") and not options.retry_failed
    }
    report = CollectReport(location.url, options.kind, options.max_items, len(done), 0)
    tally = report.tally
    inflight: set[Future[_Outcome]] = set()
    bar = tqdm(
        total=options.max_items,
        initial=min(len(done), options.max_items),
        desc=f"collect {options.kind}",
        unit="img",
        file=sys.stderr,
        disable=not progress,
    )

    def settle(futures: set[Future[_Outcome]]) -> None:
        for fut in futures:
            inflight.discard(fut)
            outcome = fut.result()
            if outcome.state == "done":
                report.now += 1
                bar.update(1)
            else:
                tally.drop(outcome.category)
                log.info(
                    "%s: %s %s", outcome.item_id, outcome.category, (outcome.record or {}).get("reason", "")
                )

    try:
        with ThreadPoolExecutor(max(1, options.workers), thread_name_prefix="collect") as pool:
            for cand in candidates:
                if report.total >= options.max_items:
                    break
                if isinstance(cand, Rejected):
                    tally.drop(cand.category)
                    log.info("rejected: %s", cand.reason)
                    continue
                if cand.item_id in done:
                    continue
                if cand.item_id in settled:
                    tally.drop(f"failed earlier: {records[cand.item_id].get('category', '?')}")
                    continue
                # Submit no more than can still be needed, so exactly max_items are collected.
                while inflight and (
                    len(inflight) >= 2 * options.workers or report.total + len(inflight) >= options.max_items
                ):
                    finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    settle(finished)
                if report.total >= options.max_items:
                    break
                inflight.add(pool.submit(_collect_one, cand, location, options, fetcher))
            while inflight:
                finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                settle(finished)
    finally:
        bar.close()
        summary = {
            "kind": options.kind,
            "updated_at": now(),
            "options": {k: v for k, v in asdict(options).items() if k != "max_pixels"},
            "collected": report.total,
            "wanted": options.max_items,
            "this_run": {"collected": report.now, **tally.as_dict()},
        }
        put_json(location, COLLECTION, summary)
    return report
