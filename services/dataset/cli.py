"""``ganfolk dataset ...``: the argument parser and the handlers.

Importing this module is cheap (argparse only): ``ganfolk/cli.py`` builds its parser from it on
every invocation, and the handlers import the heavy modules (dlib, OpenCV, pyarrow) only when a
dataset command runs.
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_arguments"]

log = logging.getLogger(__name__)


def _split_ints(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()]


def _paths(patterns: list[str]) -> list[Path]:
    """Paths from arguments that may be glob patterns the shell did not expand (quoted)."""
    out: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise FileNotFoundError(f"no file matches {pattern}")
        out += [Path(m) for m in matches]
    for p in out:
        if not p.is_file():
            raise FileNotFoundError(f"file not found: {p}")
    return out


def _max_pixels() -> int:
    from ganfolk.runtime.settings import Settings, load_settings

    return int(load_settings(Settings).max_image_pixels)


def _collect(args: argparse.Namespace) -> int:
    from services.dataset import sources
    from services.dataset.collect import CollectOptions, collect
    from services.dataset.fetch import Fetcher, FetchPolicy
    from services.dataset.licences import parse_allow_list
    from services.dataset.location import open_location

    allowed = parse_allow_list(args.licence or [])
    candidates: Any
    if args.source == "openimages":
        images_csv, boxes = _paths([args.csv])[0], _paths(args.boxes or [])
        files = [images_csv, *boxes]
        candidates = sources.open_images(
            images_csv,
            boxes,
            max_faces=args.max_faces,
            min_face_width=args.min_face_width,
        )
        default_licence = ""
    elif args.source == "wikiart":
        files = _paths(args.parquet)
        flt = sources.WikiArtFilter(
            genres=tuple(args.genre or ()),
            styles=tuple(args.style or ()),
            artists=tuple(args.artist or ()),
            after=args.after,
            before=args.before,
        )
        candidates = sources.wikiart(files, flt, dataset_url=args.dataset_url)
        default_licence = args.default_licence
    else:
        files = _paths([args.csv])
        candidates = sources.url_list(files[0])
        default_licence = ""
    options = CollectOptions(
        kind=args.source,
        max_items=args.max,
        max_pixels=_max_pixels(),
        allowed=allowed,
        default_licence=default_licence,
        workers=args.workers,
        retry_failed=args.retry_failed,
        sources=tuple(str(f) for f in files),
    )
    policy = FetchPolicy(
        timeout_s=args.timeout,
        deadline_s=args.deadline,
        attempts=args.attempts,
        max_bytes=int(args.max_mb * (1 << 20)),
        per_host=args.per_host,
    )
    location = open_location(args.out)
    try:
        report = collect(location, candidates, options, Fetcher(policy), progress=not args.no_progress)
    finally:
        location.close()
    print(report.text())
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from services.dataset.licences import DEFAULT_ALLOWED, parse_allow_list
    from services.dataset.location import open_location
    from services.dataset.prepare import PrepareOptions, parse_balance, prepare

    options = PrepareOptions(
        size=args.size,
        looseness=args.looseness,
        detector=args.detector,
        faces=args.faces,
        min_face=args.min_face,
        min_face_score=args.min_face_score,
        min_sharpness=args.min_sharpness,
        greyscale=args.greyscale,
        grey_chroma=args.grey_chroma,
        allowed=parse_allow_list(args.licence) if args.licence else DEFAULT_ALLOWED,
        dup_distance=args.dup_distance,
        balance=parse_balance(args.balance or ""),
        seed=args.seed,
        inpaint=args.inpaint,
        workers=args.workers,
        max_pixels=_max_pixels(),
    )
    overrides = {
        "align_lama_checkpoint": args.lama_checkpoint,
        "align_lama_checkpoint_sha256": args.lama_sha256,
    }
    source = open_location(args.source, create=False)
    out = open_location(args.out)
    try:
        report = prepare(source, out, options, align_overrides=overrides, progress=not args.no_progress)
    finally:
        source.close()
        out.close()
    print(report.text())
    return 0 if sum(report.tally.kept.values()) else 1


def _export(args: argparse.Namespace) -> int:
    from services.dataset import export
    from services.dataset.location import open_location

    source = open_location(args.source, create=False)
    target = args.out
    name = "dataset.zip"
    if args.format == "zip" and target.rstrip("/").endswith(".zip"):
        target, _, name = target.rstrip("/").rpartition("/")
        target = target or "."
    out = open_location(target)
    progress = not args.no_progress
    try:
        if args.format == "lmdb":
            sizes = _split_ints(args.sizes) if args.sizes else None
            written = export.export_lmdb(
                source,
                out,
                sizes=sizes,
                image_format=args.image_format,
                quality=args.quality,
                progress=progress,
            )
            print(f"lmdb: {', '.join(written)}")
        elif args.format == "zip":
            print(f"zip: {export.export_zip(source, out, name, labels=args.labels, progress=progress)}")
        else:
            train, test, n_train, n_test = export.export_taming(
                source, out, test_fraction=args.test_fraction, seed=args.seed, progress=progress
            )
            print(f"taming: {n_train} in {train}, {n_test} in {test}")
    finally:
        source.close()
        out.close()
    return 0


def _attribution(args: argparse.Namespace) -> int:
    from services.dataset.attribution import write_attribution
    from services.dataset.location import open_location

    source = open_location(args.source, create=False)
    out = open_location(args.out) if args.out else None
    try:
        md, csv_uri, n = write_attribution(source, out)
    finally:
        source.close()
        if out is not None:
            out.close()
    print(f"{n} images credited\n  {md}\n  {csv_uri}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from services.dataset.location import open_location
    from services.dataset.show import summarise

    location = open_location(args.location, create=False)
    try:
        print(summarise(location, sheet=not args.no_sheet, seed=args.seed).text())
    finally:
        location.close()
    return 0


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Expected failures (bad input, missing files) print one line and exit 1, without a trace."""

    def run(args: argparse.Namespace) -> int:
        from ganfolk.runtime.errors import FailedPrecondition
        from ganfolk.runtime.storage import StorageError

        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
        try:
            return func(args)
        except (ValueError, FileNotFoundError, FailedPrecondition, StorageError) as exc:
            print(f"ganfolk dataset {args.action}: {exc}", file=sys.stderr)
            return 1

    return run


def _add_fetch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="collection folder or s3://bucket/prefix")
    p.add_argument("--max", type=int, default=1_000_000, help="images to collect in all runs together")
    p.add_argument(
        "--licence",
        action="append",
        help="licences to collect (repeat): a family such as cc-by, cc-by-sa, cc0, public-domain, or an id "
        "such as CC-BY-2.0; default: any known licence",
    )
    p.add_argument("--workers", type=int, default=8, help="concurrent downloads in all")
    p.add_argument("--per-host", type=int, default=2, help="concurrent requests to one host")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds a connect or a read may stall")
    p.add_argument("--deadline", type=float, default=120.0, help="seconds for one image, retries included")
    p.add_argument("--attempts", type=int, default=4, help="tries per image on timeouts and 5xx")
    p.add_argument("--max-mb", type=float, default=50.0, help="largest download, in MiB")
    p.add_argument("--retry-failed", action="store_true", help="also retry items that failed for good before")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(dataset: argparse.ArgumentParser) -> None:
    """The ``dataset`` command's sub-commands, on the parser ``ganfolk/cli.py`` made for it."""
    actions = dataset.add_subparsers(dest="action", required=True)

    collect = actions.add_parser("collect", help="download images with their licences and credits")
    kinds = collect.add_subparsers(dest="source", required=True)
    oi = kinds.add_parser("openimages", help="Open Images: image-ids CSV + bounding-box CSVs (Human face)")
    oi.add_argument("--csv", required=True, help="image_ids_and_rotation.csv (or a subset's image CSV)")
    oi.add_argument(
        "--boxes", action="append", help="oidv6-*-annotations-bbox.csv (repeat); keeps face photos"
    )
    oi.add_argument("--max-faces", type=int, default=1, help="most face boxes an image may have")
    oi.add_argument(
        "--min-face-width", type=float, default=0.1, help="widest face box as a share of the image width"
    )
    wa = kinds.add_parser("wikiart", help="a WikiArt dump in the public parquet layout (huggan/wikiart)")
    wa.add_argument("--parquet", nargs="+", required=True, help="parquet files (globs allowed)")
    wa.add_argument("--genre", action="append", help="genre name to keep (repeat), e.g. portrait")
    wa.add_argument("--style", action="append", help="style name to keep (repeat), e.g. Romanticism")
    wa.add_argument("--artist", action="append", help="artist name to keep (repeat)")
    wa.add_argument("--after", type=int, help="earliest year kept (rows without a year are skipped)")
    wa.add_argument("--before", type=int, help="latest year kept (rows without a year are skipped)")
    wa.add_argument(
        "--default-licence",
        default="public-domain",
        help="licence recorded for rows without one (the dump has none: old paintings are public domain)",
    )
    wa.add_argument(
        "--dataset-url",
        default="https://huggingface.co/datasets/huggan/wikiart",
        help="the dump's page, credited",
    )
    urls = kinds.add_parser("urls", help="a CSV of url,licence,author[,title,source_page]")
    urls.add_argument("--csv", required=True)
    for p in (oi, wa, urls):
        _add_fetch_args(p)
        p.set_defaults(func=_guarded(_collect))

    prep = actions.add_parser(
        "prepare", help="filter, deduplicate, align, inpaint and balance into a training set"
    )
    prep.add_argument("source", help="folder or s3://bucket/prefix holding collections (or one collection)")
    prep.add_argument("--out", required=True, help="folder or s3://bucket/prefix for the prepared set")
    prep.add_argument("--size", type=int, default=512, help="training size in px (a power of two)")
    prep.add_argument("--balance", help="source ratio, e.g. photos=1,paintings=1 (default: keep all)")
    prep.add_argument("--looseness", type=float, default=1.3, help="crop scale relative to FFHQ's")
    prep.add_argument("--detector", choices=("hog", "cnn"), default="hog")
    prep.add_argument(
        "--faces", choices=("one", "largest"), default="one", help="exactly one face, or the largest"
    )
    prep.add_argument("--min-face", type=int, default=64, help="smallest face box side in px")
    prep.add_argument(
        "--min-face-score", type=float, default=0.3, help="weakest detection that counts as a face"
    )
    prep.add_argument(
        "--min-sharpness", type=float, default=40.0, help="variance of the Laplacian, 256 px face"
    )
    prep.add_argument("--greyscale", choices=("keep", "drop"), default="keep")
    prep.add_argument("--grey-chroma", type=float, default=4.0, help="mean RGB spread under which it is grey")
    prep.add_argument(
        "--licence",
        action="append",
        help="licences allowed (repeat); default CC0, public-domain, CC-BY, CC-BY-SA",
    )
    prep.add_argument(
        "--dup-distance", type=int, default=6, help="pHash bits within which images are duplicates"
    )
    prep.add_argument("--seed", type=int, default=0, help="balance sampling and contact sheet")
    prep.add_argument("--inpaint", choices=("auto", "lama", "telea"), default="auto")
    prep.add_argument("--lama-checkpoint", help="LaMa TorchScript (GANFOLK_ALIGN_LAMA_CHECKPOINT)")
    prep.add_argument("--lama-sha256", help="its sha256 (GANFOLK_ALIGN_LAMA_CHECKPOINT_SHA256)")
    prep.add_argument("--workers", type=int, default=1, help="alignment processes")
    prep.add_argument("--no-progress", action="store_true")
    prep.set_defaults(func=_guarded(_prepare))

    exp = actions.add_parser(
        "export", help="write a prepared set as rosinality LMDB, StyleGAN2-ADA ZIP or taming lists"
    )
    exp.add_argument("source", help="a prepared set")
    exp.add_argument("--format", choices=("lmdb", "zip", "taming"), required=True)
    exp.add_argument("--out", required=True, help="folder or s3://bucket/prefix (zip: may end in NAME.zip)")
    exp.add_argument("--sizes", help="lmdb: sizes to write, e.g. 256,512 (default: the set's size)")
    exp.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg", help="lmdb: image encoding")
    exp.add_argument("--quality", type=int, default=100, help="lmdb: JPEG quality")
    exp.add_argument("--labels", action="store_true", help="zip: each image's source as its class label")
    exp.add_argument("--test-fraction", type=float, default=0.05, help="taming: held-out share")
    exp.add_argument("--seed", type=int, default=0, help="taming: split seed")
    exp.add_argument("--no-progress", action="store_true")
    exp.set_defaults(func=_guarded(_export))

    att = actions.add_parser("attribution", help="write ATTRIBUTION.md and attribution.csv")
    att.add_argument("source", help="a prepared set or collections")
    att.add_argument("--out", help="where to write them (default: beside the images)")
    att.set_defaults(func=_guarded(_attribution))

    show = actions.add_parser("show", help="counts, licences and a contact sheet")
    show.add_argument("location", help="a prepared set or collections")
    show.add_argument("--no-sheet", action="store_true", help="do not write contact_sheet.png")
    show.add_argument("--seed", type=int, default=0)
    show.set_defaults(func=_guarded(_show))
