"""Prepare a training set from collections: filter, deduplicate, align, inpaint, balance.

Input: a location holding collections (``raw/photos``, ``raw/paintings``: each a folder of
``items/`` records and ``images/`` as :mod:`services.dataset.collect` writes them; the folder
name is the source's name), or one collection. Output, under the destination:

* ``images/<source>-<id>.png``: the aligned faces at the training size, gaps filled;
* ``masks/<source>-<id>.png``: white where the crop fell outside the source picture and was
  inpainted (beside ``images/``, it also tells the trainer's loader to read ``images/`` alone);
* ``dataset.json``: one row per image (the source record, the filters it passed, the alignment,
  the inpainted share) and the run's settings, models and counts;
* ``work/<source>/<id>.json``: each item's measurements, so a rerun (after a crash, or with
  other thresholds) aligns only what it has not aligned with the same settings before;
* ``unused/images/``, ``unused/masks/``: faces that passed the filters but lost to a duplicate
  or to the balance, kept for a rerun that chooses them;
* ``report.txt`` and ``contact_sheet.png``.

The costly part -- detection, landmarks, warping and inpainting -- runs in ``workers`` processes
(each loads its own aligner); the decisions that need every item (duplicates across sources,
the balance between sources) are made afterwards, on the measurements.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import random
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from ganfolk.runtime.errors import FailedPrecondition, InvalidArgument
from ganfolk.runtime.hashing import sha256_hex
from ganfolk.runtime.images import decode_array, encode_png
from ganfolk.runtime.settings import load_settings
from ganfolk.runtime.storage import ObjectNotFound, StorageError
from services.align.config import AlignSettings
from services.align.core import TELEA, Aligner, AlignParams, load_aligner, warp_face
from services.align.detect import Detector
from services.dataset import filters
from services.dataset.licences import DEFAULT_ALLOWED, is_allowed
from services.dataset.location import Location
from services.dataset.records import DATASET_JSON, Tally, discover_sources, load_records, now, put_json
from services.dataset.show import contact_sheet

__all__ = [
    "PrepareOptions",
    "PrepareReport",
    "parse_balance",
    "prepare",
    "process_image",
]

log = logging.getLogger(__name__)

FORMAT = "ganfolk-dataset/1"
_WORK = "work"
_SET_ASIDE = "unused"  # passed every filter but lost to a duplicate or to the balance


@dataclass(frozen=True)
class PrepareOptions:
    size: int = 512
    looseness: float = 1.3  # crop scale relative to FFHQ's; the article's looser crop
    detector: Detector = "hog"
    faces: Literal["one", "largest"] = "one"
    min_face: int = 64  # px: the face box's shorter side in the source
    # HOG scores below this are mostly badges, patterns and painted ornaments; such detections
    # neither count as a second face nor get aligned.
    min_face_score: float = 0.3
    min_sharpness: float = 40.0  # variance of the Laplacian on the 256 px aligned face
    greyscale: Literal["keep", "drop"] = "keep"
    grey_chroma: float = 4.0  # mean RGB spread (0-255) under which a picture counts as grey
    allowed: tuple[str, ...] = DEFAULT_ALLOWED
    dup_distance: int = 6  # Hamming distance of 64-bit pHashes that counts as the same picture
    balance: tuple[tuple[str, float], ...] = ()
    seed: int = 0
    inpaint: Literal["auto", "lama", "telea"] = "auto"
    workers: int = 1  # processes; 1 aligns in this process
    max_pixels: int = 40_000_000

    def work_key(self) -> str:
        """A digest of the settings that change one item's measurements or pixels."""
        keys = ("size", "looseness", "detector", "faces", "min_face", "min_face_score", "inpaint")
        return sha256_hex(json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True).encode())[:16]


def parse_balance(text: str) -> tuple[tuple[str, float], ...]:
    """``photos=1,paintings=1`` -> ``(("photos", 1.0), ("paintings", 1.0))``."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not name.strip() or weight < 0 or math.isnan(weight):
            raise ValueError(
                f"balance entry {part!r} is not name=weight (a weight >= 0), e.g. photos=1,paintings=1"
            )
        out.append((name.strip(), weight))
    return tuple(out)


# --------------------------------------------------------------------------- one image (in a worker)

_ALIGNER: Aligner | None = None


def init_worker(align_overrides: dict[str, Any], single_thread: bool = True) -> None:
    """Load this process's aligner (dlib models, and LaMa when configured).

    ``single_thread`` limits OpenCV to one thread: in a pool the processes are the
    parallelism, and OpenCV's own threads on top oversubscribe the cores.
    """
    global _ALIGNER
    if single_thread:
        cv2.setNumThreads(1)
    _ALIGNER = load_aligner(load_settings(AlignSettings, **align_overrides))


def process_image(data: bytes, rotate: int, options: PrepareOptions) -> dict[str, Any]:
    """Measure, align and inpaint one source image; the result says why when it fails a filter."""
    aligner = _ALIGNER
    if aligner is None:
        raise RuntimeError("process_image needs init_worker() first")
    try:
        image = decode_array(data, options.max_pixels)
    except InvalidArgument as exc:
        return {"ok": False, "reason": "unreadable", "detail": str(exc)}
    if rotate % 360:
        # Open Images' Rotation is counter-clockwise degrees; rot90 turns counter-clockwise too.
        image = np.ascontiguousarray(np.rot90(image, k=(rotate % 360) // 90))
    h, w = image.shape[:2]
    result: dict[str, Any] = {
        "width": w,
        "height": h,
        "phash": filters.phash(image),
        "chroma": round(filters.chroma(image), 3),
    }
    faces = [f for f in aligner.detect(image, options.detector) if f.score >= options.min_face_score]
    sides = [min(f.box[2] - f.box[0], f.box[3] - f.box[1]) for f in faces]
    big = [f for f, s in zip(faces, sides, strict=True) if s >= options.min_face]
    result["faces_found"] = len(faces)
    if not faces:
        return {**result, "ok": False, "reason": "no face"}
    if not big:
        return {**result, "ok": False, "reason": f"face under {options.min_face} px", "detail": max(sides)}
    if options.faces == "one" and len(big) > 1:
        return {**result, "ok": False, "reason": "more than one face", "detail": len(big)}
    face = big[0]  # detect() sorts the largest first
    params = AlignParams(output_size=options.size, looseness=options.looseness, detector=options.detector)
    try:
        aligned = warp_face(image, face, params)
        probe = warp_face(
            image, face, AlignParams(output_size=filters.SHARPNESS_SIZE, looseness=options.looseness)
        )
    except InvalidArgument as exc:
        return {**result, "ok": False, "reason": "alignment failed", "detail": str(exc)}
    filled, used = aligner.inpaint(aligned.image, aligned.mask, options.inpaint)
    area = float((aligned.mask > 0).mean())
    models = aligner.models_for(options.detector, used if area > 0 else None)
    return {
        **result,
        "ok": True,
        "sharpness": round(filters.sharpness(probe.image, probe.mask), 3),
        "face": {
            "box": [round(v, 2) for v in face.box],
            "score": round(face.score, 4),
            "side": round(min(face.box[2] - face.box[0], face.box[3] - face.box[1]), 2),
        },
        "alignment": {
            "output_size": options.size,
            "looseness": options.looseness,
            "detector": options.detector,
            "rotation_degrees": round(aligned.rotation_degrees, 4),
            "quad": np.round(aligned.quad, 2).tolist(),
            "landmarks": np.round(face.landmarks, 1).tolist(),
        },
        "inpainted_area": round(area, 6),
        "inpainted_with": (TELEA if used == "telea" else "lama") if area > 0 else None,
        "models": [{"name": m.name, "source": m.source, "sha256": m.sha256} for m in models],
        "png": encode_png(filled),
        "mask_png": encode_png(aligned.mask),
    }


def _process_task(task: tuple[bytes, int, PrepareOptions]) -> dict[str, Any]:
    return process_image(*task)


# --------------------------------------------------------------------------- the whole run


@dataclass
class PrepareReport:
    source: str
    destination: str
    size: int
    sources: list[str]
    collected: dict[str, int]
    tally: Tally = field(default_factory=Tally)
    inpainting: str = ""
    reused: int = 0
    aligned: int = 0
    manifest_uri: str = ""
    sheet_uri: str = ""

    def text(self) -> str:
        lines = [f"prepare {self.source} -> {self.destination} ({self.size} px)"]
        names = self.sources
        width = max([len(r) for r in self.tally.dropped] + [12])
        lines.append(f"  {'':<{width}}  " + "  ".join(f"{n:>10}" for n in names))
        lines.append(
            f"  {'collected':<{width}}  " + "  ".join(f"{self.collected.get(n, 0):>10}" for n in names)
        )
        for reason, c in sorted(self.tally.dropped.items()):
            lines.append(f"  {reason:<{width}}  " + "  ".join(f"{c[n]:>10}" for n in names))
        lines.append(f"  {'kept':<{width}}  " + "  ".join(f"{self.tally.kept[n]:>10}" for n in names))
        lines.append(f"  aligned now: {self.aligned}, reused from an earlier run: {self.reused}")
        if self.inpainting == TELEA:
            lines.append(
                "  inpainting: OpenCV Telea, NOT LaMa (no LaMa checkpoint: set GANFOLK_ALIGN_LAMA_CHECKPOINT "
                "or pass --lama-checkpoint); recorded in dataset.json"
            )
        else:
            lines.append(f"  inpainting: {self.inpainting}")
        if self.manifest_uri:
            lines.append(f"  dataset.json: {self.manifest_uri}")
        if self.sheet_uri:
            lines.append(f"  contact sheet: {self.sheet_uri}")
        return "\n".join(lines)


def _resolve_inpainting(options: PrepareOptions, align_overrides: dict[str, Any]) -> str:
    settings = load_settings(AlignSettings, **align_overrides)
    has_lama = bool(settings.align_lama_checkpoint)
    if options.inpaint == "lama" and not has_lama:
        raise FailedPrecondition(
            "--inpaint lama needs a LaMa checkpoint: set GANFOLK_ALIGN_LAMA_CHECKPOINT or pass "
            "--lama-checkpoint"
        )
    if options.inpaint == "telea" or not has_lama:
        return TELEA
    return "lama"


def _run_pool(
    tasks: Iterator[tuple[str, tuple[bytes, int, PrepareOptions]]],
    workers: int,
    align_overrides: dict[str, Any],
    on_result: Callable[[str, dict[str, Any]], None],
) -> None:
    if workers <= 1:
        init_worker(align_overrides, single_thread=False)
        for name, task in tasks:
            on_result(name, _process_task(task))
        return
    # spawn, not fork: the parent holds threads (S3 client pools, progress bar) that a fork copies
    # mid-flight.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=init_worker, initargs=(align_overrides,)
    ) as pool:
        inflight: dict[Future[dict[str, Any]], str] = {}
        for name, task in tasks:
            while len(inflight) >= 2 * workers:
                finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in finished:
                    on_result(inflight.pop(fut), fut.result())
            inflight[pool.submit(_process_task, task)] = name
        while inflight:
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in finished:
                on_result(inflight.pop(fut), fut.result())


def _move(location: Location, src: str, dst: str) -> None:
    """Move one object (a copy then a delete: stores have no rename); a missing one is skipped."""
    try:
        data = location.get(src)
    except ObjectNotFound:
        return
    location.put(dst, data, "image/png")
    location.delete(src)


def _balance(
    passing: dict[str, list[str]], weights: dict[str, float], seed: int
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Keep sources in the ratio of ``weights``; (kept names per source, dropped count per source)."""
    active = {s: w for s, w in weights.items() if w > 0}
    if not active:
        return {s: [] for s in passing}, {s: len(v) for s, v in passing.items()}
    scale = min(len(passing.get(s, [])) / w for s, w in active.items())
    kept: dict[str, list[str]] = {}
    dropped: dict[str, int] = {}
    for source, names in passing.items():
        want = math.floor(scale * active.get(source, 0.0) + 1e-9)
        rng = random.Random(f"{seed}:{source}")
        chosen = sorted(rng.sample(sorted(names), want)) if want < len(names) else sorted(names)
        kept[source] = chosen
        dropped[source] = len(names) - len(chosen)
    return kept, dropped


def prepare(
    source: Location,
    destination: Location,
    options: PrepareOptions,
    *,
    align_overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Build the training set under ``destination`` from the collections under ``source``."""
    from tqdm import tqdm

    if options.size < 8 or options.size & (options.size - 1):
        raise InvalidArgument(f"size must be a power of two (a StyleGAN2 resolution), got {options.size}")
    align_overrides = dict(align_overrides or {})
    sources = discover_sources(source)
    if not sources:
        raise InvalidArgument(f"no collections under {source}: run `ganfolk dataset collect ... --out` first")
    names = list(sources)
    weights = dict(options.balance)
    if weights:
        unknown = sorted(set(weights) - set(names))
        unnamed = sorted(set(names) - set(weights))
        if unknown or unnamed:
            problems = [f"no source {', '.join(unknown)}"] if unknown else []
            problems += [f"missing {', '.join(unnamed)}"] if unnamed else []
            raise InvalidArgument(
                f"--balance must name every source ({', '.join(names)}): {'; '.join(problems)}"
            )
    inpainting = _resolve_inpainting(options, align_overrides)
    report = PrepareReport(source.url, destination.url, options.size, names, {}, inpainting=inpainting)
    tally = report.tally
    key = options.work_key()

    # Markers of earlier runs, and which of their images are still there.
    markers: dict[str, dict[str, Any]] = {}
    for info in destination.objects(_WORK):
        try:
            m = json.loads(destination.store.get(info.key))
            markers[f"{m['source']}/{m['id']}"] = m
        except (ObjectNotFound, ValueError, KeyError):
            continue
    present = {destination.rel(i.key) for i in destination.objects("images")}
    present |= {
        destination.rel(i.key).removeprefix(_SET_ASIDE + "/")
        for i in destination.objects(_SET_ASIDE + "/images")
    }

    records: dict[str, dict[str, Any]] = {}  # "<source>/<id>" -> record
    todo: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    for name, loc in sources.items():
        done = [r for r in load_records(loc).values() if r.get("state") == "done"]
        report.collected[name] = len(done)
        for r in sorted(done, key=lambda r: r["id"]):
            ref = f"{name}/{r['id']}"
            lic = r.get("licence") or ""
            if not is_allowed(lic, options.allowed):
                tally.drop("licence not allowed", name)
                continue
            records[ref] = r
            m = markers.get(ref)
            if (
                m is not None
                and m.get("key") == key
                and m.get("source_sha256") == r.get("sha256")
                and (not m["ok"] or f"images/{m['file']}" in present)
            ):
                results[ref] = m
                report.reused += 1
            else:
                todo.append(ref)

    bar = tqdm(total=len(todo), desc="align", unit="img", file=sys.stderr, disable=not progress)

    def tasks() -> Iterator[tuple[str, tuple[bytes, int, PrepareOptions]]]:
        for ref in todo:
            name = ref.partition("/")[0]
            r = records[ref]
            try:
                data = sources[name].get(r["image"], r.get("sha256"))
            except (StorageError, ObjectNotFound) as exc:
                results[ref] = {"ok": False, "reason": "unreadable", "detail": str(exc)}
                bar.update(1)
                continue
            yield ref, (data, int(r.get("rotate") or 0), options)

    def on_result(ref: str, res: dict[str, Any]) -> None:
        name, _, item_id = ref.partition("/")
        png = res.pop("png", None)
        mask = res.pop("mask_png", None)
        file = f"{name}-{item_id}.png"
        if res.get("ok"):
            info = destination.put(f"images/{file}", png or b"", "image/png")
            destination.put(f"masks/{file}", mask or b"", "image/png")
            res["sha256"] = info.sha256
        marker = {
            **res,
            "source": name,
            "id": item_id,
            "file": file,
            "key": key,
            "source_sha256": records[ref].get("sha256"),
        }
        put_json(destination, f"{_WORK}/{name}/{item_id}.json", marker)
        results[ref] = marker
        report.aligned += 1
        bar.update(1)

    try:
        _run_pool(tasks(), options.workers, align_overrides, on_result)
    finally:
        bar.close()

    # Decisions on the measurements.
    survivors: list[str] = []
    for ref in sorted(results):
        name = ref.partition("/")[0]
        res = results[ref]
        if not res.get("ok"):
            tally.drop(str(res.get("reason", "failed")), name)
        elif options.greyscale == "drop" and res["chroma"] < options.grey_chroma:
            tally.drop("greyscale", name)
        elif res["sharpness"] < options.min_sharpness:
            tally.drop("blurred", name)
        else:
            survivors.append(ref)
    order = {n: i for i, n in enumerate(names)}
    dups = filters.find_duplicates(
        [
            filters.DupCandidate(
                ref,
                results[ref]["phash"],
                results[ref]["width"] * results[ref]["height"],
                order[ref.partition("/")[0]],
            )
            for ref in survivors
        ],
        options.dup_distance,
    )
    unique = [ref for ref in survivors if ref not in dups]
    for ref in dups:
        tally.drop("duplicate", ref.partition("/")[0])
    passing: dict[str, list[str]] = {n: [r for r in unique if r.partition("/")[0] == n] for n in names}
    if weights:
        kept_by_source, dropped = _balance(passing, weights, options.seed)
        for name, n in dropped.items():
            if n:
                tally.drop("balance", name, n)
    else:
        kept_by_source = passing
    chosen = sorted(ref for refs in kept_by_source.values() for ref in refs)
    for ref in chosen:
        tally.keep(ref.partition("/")[0])

    # Only the chosen images stay in images/ (the trainer's loader reads the folder whole); the
    # others are set aside, not deleted, so a rerun that chooses them again need not realign them.
    wanted = {results[ref]["file"] for ref in chosen}
    for info in list(destination.objects("images")):
        file = destination.rel(info.key).removeprefix("images/")
        if file not in wanted:
            for folder in ("images", "masks"):
                _move(destination, f"{folder}/{file}", f"{_SET_ASIDE}/{folder}/{file}")
    for file in sorted(wanted):
        if not destination.exists(f"images/{file}"):
            for folder in ("images", "masks"):
                _move(destination, f"{_SET_ASIDE}/{folder}/{file}", f"{folder}/{file}")

    rows = []
    models: dict[str, dict[str, str]] = {}
    for ref in chosen:
        name = ref.partition("/")[0]
        res = results[ref]
        r = records[ref]
        for m in res.get("models", []):
            models[m["name"]] = m
        passed = ["licence", "face", "face size", "sharpness", "unique"]
        if options.greyscale == "drop":
            passed.insert(3, "colour")
        rows.append(
            {
                "file": f"images/{res['file']}",
                "sha256": res["sha256"],
                "mask": f"masks/{res['file']}",
                "source": name,
                "record": {k: v for k, v in r.items() if k not in ("state",)},
                "filters_passed": passed,
                "source_size": [res["width"], res["height"]],
                "face": res["face"],
                "alignment": res["alignment"],
                "inpainted_area": res["inpainted_area"],
                "inpainted_with": res["inpainted_with"],
                "sharpness": res["sharpness"],
                "greyscale": res["chroma"] < options.grey_chroma,
                "phash": res["phash"],
            }
        )
    manifest = {
        "format": FORMAT,
        "created_at": now(),
        "source": source.url,
        "size": options.size,
        "count": len(rows),
        "sources": {
            n: {"location": sources[n].url, "collected": report.collected[n], "kept": tally.kept[n]}
            for n in names
        },
        "options": {k: v for k, v in asdict(options).items() if k not in ("workers", "max_pixels")},
        "inpainting": inpainting,
        "fallbacks": [TELEA] if inpainting == TELEA else [],
        "models": sorted(models.values(), key=lambda m: m["name"]),
        "report": tally.as_dict(),
        "images": rows,
    }
    report.manifest_uri = put_json(destination, DATASET_JSON, manifest)
    if rows:
        sheet = contact_sheet(destination, rows, seed=options.seed)
        report.sheet_uri = destination.put("contact_sheet.png", sheet, "image/png").uri
    destination.put("report.txt", (report.text() + "\n").encode(), "text/plain")
    return report
