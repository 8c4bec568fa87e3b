"""collect -> prepare -> export end to end, on a folder and on the S3 API server.

Photos come as Open Images (image-ids and bounding-box CSVs, images on a loopback HTTP server);
paintings as a WikiArt parquet dump. What each picture should meet is planned in
``tests.dataset.helpers.faces``; the expected counts below follow from it.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganfolk.runtime.errors import FailedPrecondition
from services.dataset import export
from services.dataset.attribution import write_attribution
from services.dataset.collect import CollectOptions, collect
from services.dataset.fetch import Fetcher, FetchPolicy
from services.dataset.filters import DupCandidate, find_duplicates, phash
from services.dataset.location import Location, open_location
from services.dataset.prepare import PrepareOptions, parse_balance, prepare
from services.dataset.show import summarise
from services.dataset.sources import Candidate, WikiArtFilter, open_images, url_list, wikiart
from services.stylegan.training.data import ImageDataset, prepare_dataset
from tests.dataset.helpers import (
    BOX_HEADER,
    OPEN_IMAGES_HEADER,
    Route,
    encode,
    faces,
    grey,
    resized_copy,
    serve,
    write_csv,
    write_wikiart,
)
from tests.fixtures.s3 import S3Server

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64
FAST = FetchPolicy(timeout_s=2.0, deadline_s=10.0, attempts=2, retry_wait_s=0.05)
CC_BY = "https://creativecommons.org/licenses/by/2.0/"
CC_BY_NC = "https://creativecommons.org/licenses/by-nc/2.0/"


@pytest.fixture(scope="module")
def pics() -> dict[str, np.ndarray]:
    return faces()


def test_near_duplicates_resized_and_reencoded_are_caught_other_faces_are_not(
    pics: dict[str, np.ndarray],
) -> None:
    copy = np.asarray(Image.open(io.BytesIO(resized_copy(pics["upright"], 180, 60))))
    items = [
        DupCandidate("photos/upright", phash(pics["upright"]), 256 * 256, 0),
        DupCandidate("paintings/copy", phash(copy), 180 * 180, 1),
        DupCandidate("photos/mirrored", phash(pics["mirrored"]), 256 * 256, 0),
        DupCandidate("photos/turned", phash(pics["turned"]), 256 * 256, 0),
        DupCandidate("paintings/painted", phash(pics["painted"]), 256 * 256, 1),
    ]
    assert find_duplicates(items, 6) == {"paintings/copy": "photos/upright"}
    # The larger copy wins wherever it comes from.
    bigger = [DupCandidate("a/small", items[0].phash, 100, 0), DupCandidate("b/big", items[1].phash, 900, 1)]
    assert find_duplicates(bigger, 6) == {"a/small": "b/big"}
    assert find_duplicates(items, -1) == {}


def test_balance_parses_and_rejects_nonsense() -> None:
    assert parse_balance("photos=1, paintings=2") == (("photos", 1.0), ("paintings", 2.0))
    with pytest.raises(ValueError, match="not name=weight"):
        parse_balance("photos")


def _photos(pics: dict[str, np.ndarray]) -> dict[str, tuple[bytes, str, str]]:
    """Open Images items: id -> (bytes, licence, rotation)."""
    sideways = np.ascontiguousarray(np.rot90(pics["turned"], k=-1))  # stored turned a quarter clockwise
    return {
        "p0upright": (encode(pics["upright"]), CC_BY, "0"),
        "p1turned": (encode(sideways), CC_BY, "90"),  # the Rotation column turns it back
        "p2mirrored": (encode(pics["mirrored"]), CC_BY, ""),
        "p3blurred": (encode(pics["blurred"]), CC_BY, "0"),
        "p4far": (encode(pics["far"]), CC_BY, "0"),
        "p5coffee": (encode(pics["coffee"]), CC_BY, "0"),
        "p6noncommercial": (encode(pics["tilted"]), CC_BY_NC, "0"),
    }


def _paintings(pics: dict[str, np.ndarray]) -> list[dict[str, object]]:
    def row(data: bytes, path: str | None, artist: int, genre: int = 2, style: int = 2) -> dict[str, object]:
        return {"image": {"bytes": data, "path": path}, "artist": artist, "genre": genre, "style": style}

    return [
        row(encode(pics["painted"]), "john-singer-sargent_madame-x-1884.jpg", 2),
        row(encode(pics["tilted"]), "ivan-aivazovsky_portrait-of-a-sailor-1850.jpg", 1, style=3),
        row(resized_copy(pics["upright"]), None, 3, style=0),  # the photo again, smaller
        row(encode(grey(pics["painted"])), None, 3),  # a greyscale study
        row(encode(pics["far"]), None, 3, genre=1),  # a landscape: not collected
        row(b"", None, 3),  # a corrupt row
    ]


def _collect_all(raw: Location, pics: dict[str, np.ndarray], tmp_path: Path) -> None:
    photos = _photos(pics)
    routes = {f"/{i}.jpg": Route(data) for i, (data, _, _) in photos.items()}
    with serve(routes) as server:
        images_csv = write_csv(
            tmp_path / "image_ids_and_rotation.csv",
            OPEN_IMAGES_HEADER,
            [
                {
                    "ImageID": i,
                    "Subset": "train",
                    "OriginalURL": f"{server.url}/{i}.jpg",
                    "OriginalLandingURL": f"https://www.flickr.com/photos/someone/{i}",
                    "License": lic,
                    "Author": f"Photographer {i}",
                    "Title": f"Photo {i}",
                    "Rotation": rot,
                }
                for i, (_, lic, rot) in photos.items()
            ],
        )
        boxes_csv = write_csv(
            tmp_path / "oidv6-train-annotations-bbox.csv",
            BOX_HEADER,
            [
                {
                    "ImageID": i,
                    "Source": "xclick",
                    "LabelName": "/m/0dzct",
                    "Confidence": "1",
                    "XMin": "0.3",
                    "XMax": "0.6",
                    "YMin": "0.1",
                    "YMax": "0.5",
                    "IsGroupOf": "0",
                }
                for i in photos
            ],
        )
        report = collect(
            raw.child("photos"),
            open_images(images_csv, [boxes_csv], min_face_width=0.1),
            CollectOptions(kind="openimages", max_items=100, max_pixels=40_000_000, workers=4),
            Fetcher(FAST),
            progress=False,
        )
        assert report.total == len(photos)
    parquet = write_wikiart(tmp_path / "train-00000-of-00001.parquet", _paintings(pics))
    report = collect(
        raw.child("paintings"),
        wikiart([parquet], WikiArtFilter(genres=("portrait",))),
        CollectOptions(kind="wikiart", max_items=100, max_pixels=40_000_000, default_licence="public-domain"),
        progress=False,
    )
    assert report.total == 4 and sum(report.tally.dropped["corrupt row"].values()) == 1


def _dropped(report) -> dict[str, dict[str, int]]:
    return {reason: {k: v for k, v in c.items() if v} for reason, c in report.tally.dropped.items()}


OPTIONS = PrepareOptions(size=SIZE, greyscale="drop", balance=(("photos", 1.0), ("paintings", 1.0)), seed=3)


def _check_prepared(out: Location, report) -> list[dict]:
    assert _dropped(report) == {
        "licence not allowed": {"photos": 1},
        "blurred": {"photos": 1},
        "face under 64 px": {"photos": 1},
        "no face": {"photos": 1},
        "greyscale": {"paintings": 1},
        "duplicate": {"paintings": 1},
        "balance": {"photos": 1},
    }
    assert dict(report.tally.kept) == {"photos": 2, "paintings": 2}
    assert report.inpainting == "opencv-telea" and "NOT LaMa" in report.text()
    manifest = json.loads(out.get("dataset.json"))
    assert manifest["count"] == 4 and manifest["size"] == SIZE
    assert manifest["inpainting"] == "opencv-telea" and manifest["fallbacks"] == ["opencv-telea"]
    assert {m["name"] for m in manifest["models"]} >= {"dlib-hog-frontal-face", "dlib-shape-predictor-68"}
    assert manifest["sources"]["photos"]["collected"] == 7 and manifest["sources"]["paintings"]["kept"] == 2
    rows = manifest["images"]
    by_id = {r["record"]["id"]: r for r in rows}
    # The smaller painting copy of the upright photo lost to the photo (if balance kept the photo).
    assert "wa-train-00000-of-00001-000002" not in by_id
    assert {r["source"] for r in rows} == {"photos", "paintings"}
    for r in rows:
        rec = r["record"]
        assert rec["licence"] in ("CC-BY-2.0", "public-domain") and rec["author"] and rec["sha256"]
        assert r["filters_passed"] == ["licence", "face", "face size", "colour", "sharpness", "unique"]
        assert 0.0 <= r["inpainted_area"] < 0.5
        assert r["inpainted_with"] == ("opencv-telea" if r["inpainted_area"] > 0 else None)
        assert r["alignment"]["looseness"] == 1.3 and len(r["alignment"]["landmarks"]) == 68
        img = Image.open(io.BytesIO(out.get(r["file"], r["sha256"])))
        assert img.size == (SIZE, SIZE) and img.mode == "RGB"
        assert Image.open(io.BytesIO(out.get(r["mask"]))).size == (SIZE, SIZE)
    if "oi-p1turned" in by_id:
        # Turned upright by the Rotation column before alignment: the eye line is near level.
        assert abs(by_id["oi-p1turned"]["alignment"]["rotation_degrees"]) < 30
    painted = by_id.get("wa-train-00000-of-00001-000000")
    if painted is not None:
        assert painted["record"]["author"] == "John Singer Sargent"
        assert painted["record"]["source_page"].startswith("https://www.wikiart.org/en/john-singer-sargent/")
    images = sorted(out.rel(i.key) for i in out.objects("images"))
    assert images == sorted(r["file"] for r in rows)
    assert Image.open(io.BytesIO(out.get("contact_sheet.png"))).size[0] > 0
    assert "prepare" in out.get("report.txt").decode()
    return rows


def test_collect_prepare_export_on_a_folder(pics: dict[str, np.ndarray], tmp_path: Path) -> None:
    raw = open_location(str(tmp_path / "raw"))
    _collect_all(raw, pics, tmp_path)
    out = open_location(str(tmp_path / "prepared"))
    report = prepare(raw, out, OPTIONS, progress=False)
    rows = _check_prepared(out, report)

    # A rerun aligns nothing again; other thresholds reuse the same measurements.
    again = prepare(raw, out, OPTIONS, progress=False)
    assert again.aligned == 0 and again.reused == 10 and dict(again.tally.kept) == dict(report.tally.kept)
    keep_grey = prepare(raw, out, PrepareOptions(size=SIZE, seed=3), progress=False)
    assert keep_grey.aligned == 0
    # Without the balance, every unique face stays; the grey study is now a copy of the painted one.
    assert dict(keep_grey.tally.kept) == {"photos": 3, "paintings": 2}
    assert sum(keep_grey.tally.dropped["duplicate"].values()) == 2
    report = prepare(raw, out, OPTIONS, progress=False)
    rows = _check_prepared(out, report)

    # Our trainer reads the prepared folder (images/ beside masks/) ...
    info = prepare_dataset(str(tmp_path / "prepared"), SIZE, tmp_path / "cache", workers=1)
    assert info.count == 4 and info.kind == "folder"

    # ... and the LMDB export, in rosinality's layout.
    lmdb_dir = tmp_path / "lmdb"
    export.export_lmdb(out, open_location(str(lmdb_dir)), sizes=[32, SIZE], progress=False)
    import lmdb

    env = lmdb.open(str(lmdb_dir), readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.get(b"length") == b"4"
        small, full = txn.get(b"32-00003"), txn.get(f"{SIZE}-00000".encode())
        assert small is not None and Image.open(io.BytesIO(small)).size == (32, 32)
        assert full is not None and Image.open(io.BytesIO(full)).format == "JPEG"
        assert txn.get(b"32-00004") is None
    env.close()
    info = prepare_dataset(str(lmdb_dir), SIZE, tmp_path / "cache", workers=1)
    assert info.kind == "lmdb" and info.count == 4
    batch = ImageDataset(info)[0]
    assert tuple(batch.shape) == (3, SIZE, SIZE) and -1.0 <= float(batch.min()) <= float(batch.max()) <= 1.0

    # The StyleGAN2-ADA ZIP: stored PNGs and dataset.json with the sources as labels.
    path = export.export_zip(
        out, open_location(str(tmp_path / "zips")), "ganfolk-64.zip", labels=True, progress=False
    )
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names == [
            "00000/img00000000.png",
            "00000/img00000001.png",
            "00000/img00000002.png",
            "00000/img00000003.png",
            "dataset.json",
        ]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        labels = json.loads(zf.read("dataset.json"))["labels"]
        sources = [r["source"] for r in rows]
        order = list(json.loads(out.get("dataset.json"))["sources"])  # label = index here
        assert order == ["paintings", "photos"]
        assert labels == [[n, order.index(s)] for n, s in zip(names[:-1], sources, strict=True)]
        assert Image.open(io.BytesIO(zf.read(names[0]))).size == (SIZE, SIZE)

    # taming's file lists: a seeded held-out split over copied images.
    taming = tmp_path / "taming"
    _, _, n_train, n_test = export.export_taming(
        out, open_location(str(taming)), test_fraction=0.25, seed=1, progress=False
    )
    train = (taming / "train.txt").read_text().splitlines()
    test = (taming / "test.txt").read_text().splitlines()
    assert (n_train, n_test) == (3, 1) and len(train) == 3 and len(test) == 1 and not set(train) & set(test)
    assert all(Path(p).is_file() and Path(p).is_absolute() for p in train + test)

    # Attribution lists every image with its credits; show counts them.
    _, _, n = write_attribution(out)
    assert n == 4
    credits = list(csv.DictReader(io.StringIO(out.get("attribution.csv").decode())))
    assert {c["file"] for c in credits} == {r["file"] for r in rows}
    assert all(c["author"] and c["licence_url"].startswith("https://creativecommons.org/") for c in credits)
    md = out.get("ATTRIBUTION.md").decode()
    assert "[CC-BY-2.0](https://creativecommons.org/licenses/by/2.0/)" in md and "inpainting" in md
    summary = summarise(out)
    assert summary.per_source == {"photos": 2, "paintings": 2} and summary.sheet_uri
    raw_summary = summarise(raw)
    assert raw_summary.per_source == {"photos": 7, "paintings": 4}
    assert raw_summary.licences["CC-BY-2.0"] == 6 and raw_summary.licences["CC-BY-NC-2.0"] == 1

    # The same through the command line.
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ganfolk.cli", "dataset", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    result = cli("show", str(tmp_path / "prepared"))
    assert result.returncode == 0 and "photos" in result.stdout and "CC-BY-2.0" in result.stdout
    result = cli(
        "export",
        str(tmp_path / "prepared"),
        "--format",
        "zip",
        "--out",
        str(tmp_path / "cli.zip"),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "cli.zip") as zf:
        assert json.loads(zf.read("dataset.json")) == {"labels": None}
    result = cli(
        "prepare",
        str(tmp_path / "raw"),
        "--out",
        str(tmp_path / "p2"),
        "--balance",
        "photos=1",
        "--no-progress",
    )
    assert result.returncode == 1 and "--balance must name every source" in result.stderr


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("GANFOLK_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("GANFOLK_S3_SECRET_KEY", s3_server.secret_key)
    yield f"?endpoint={s3_server.endpoint}&secure=false"


def test_collect_prepare_export_on_s3(pics: dict[str, np.ndarray], tmp_path: Path, s3_env: str) -> None:
    import uuid

    bucket = f"ds-{uuid.uuid4().hex[:12]}"
    routes = {
        "/a.jpg": Route(encode(pics["upright"])),
        "/b.jpg": Route(encode(pics["mirrored"])),
        "/c.jpg": Route(resized_copy(pics["upright"])),
        "/d.jpg": Route(encode(pics["painted"])),
    }
    with serve(routes) as server:
        csv_path = write_csv(
            tmp_path / "u.csv",
            ["url", "licence", "author", "title", "source_page"],
            [
                {"url": f"{server.url}{p}", "licence": "CC BY-SA 4.0", "author": f"A{p}", "title": p}
                for p in routes
            ],
        )
        raw = open_location(f"s3://{bucket}/raw{s3_env}")
        report = collect(
            raw.child("mine"),
            url_list(csv_path),
            CollectOptions(kind="urls", max_items=10, max_pixels=40_000_000),
            Fetcher(FAST),
            progress=False,
        )
        assert report.total == 4
    out = open_location(f"s3://{bucket}/ganfolk-{SIZE}{s3_env}")
    # Two alignment processes here: the pool path, beside the in-process one above.
    prepared = prepare(raw, out, PrepareOptions(size=SIZE, workers=2), progress=False)
    assert dict(prepared.tally.kept) == {"mine": 3} and _dropped(prepared) == {"duplicate": {"mine": 1}}
    manifest = json.loads(out.get("dataset.json"))
    kept = sorted(r["record"]["source_url"].rsplit("/", 1)[-1] for r in manifest["images"])
    assert kept == ["a.jpg", "b.jpg", "d.jpg"]  # c.jpg, the smaller copy of a.jpg, went
    assert out.store.exists(f"ganfolk-{SIZE}/contact_sheet.png")

    # The LMDB goes up as data.mdb; fetched back, the trainer's loader reads it.
    lmdb_out = out.child("lmdb")
    [uri] = export.export_lmdb(out, lmdb_out, image_format="png", progress=False)
    assert uri == f"s3://{bucket}/ganfolk-{SIZE}/lmdb/data.mdb"
    local = tmp_path / "fetched"
    local.mkdir()
    out.store.get_file(f"ganfolk-{SIZE}/lmdb/data.mdb", local / "data.mdb")
    info = prepare_dataset(str(local), SIZE, tmp_path / "cache", workers=1)
    assert info.count == 3
    zip_uri = export.export_zip(out, out.child("zip"), progress=False)
    assert zip_uri == f"s3://{bucket}/ganfolk-{SIZE}/zip/dataset.zip"
    with zipfile.ZipFile(io.BytesIO(out.store.get(f"ganfolk-{SIZE}/zip/dataset.zip"))) as zf:
        assert json.loads(zf.read("dataset.json")) == {"labels": None} and len(zf.namelist()) == 4
    _, _, n_train, n_test = export.export_taming(out, out.child("taming"), progress=False)
    assert n_train + n_test == 3
    listed = out.store.get(f"ganfolk-{SIZE}/taming/train.txt").decode().split()
    assert all(out.child("taming").exists(p) for p in listed)
    _, _, n = write_attribution(out)
    assert n == 3 and summarise(out, sheet=False).per_source == {"mine": 3}


def test_lama_fills_the_border_when_configured(pics: dict[str, np.ndarray], tmp_path: Path) -> None:
    from ganfolk.runtime.hashing import file_sha256
    from tests.align.test_core import write_fake_lama

    raw = open_location(str(tmp_path / "raw" / "photos"))
    candidates = [
        Candidate(f"p{i}", "CC0", "A", name, "", f"test:{name}", data=encode(pics[name]))
        for i, name in enumerate(("upright", "turned"))
    ]
    collect(raw, candidates, CollectOptions(kind="urls", max_items=2, max_pixels=40_000_000), progress=False)
    lama = write_fake_lama(tmp_path)
    overrides = {"align_lama_checkpoint": str(lama), "align_lama_checkpoint_sha256": file_sha256(lama)}
    out = open_location(str(tmp_path / "prepared"))
    # A loose crop reaches past the 256 px pictures, so every face has a border to fill.
    report = prepare(
        raw, out, PrepareOptions(size=SIZE, looseness=2.0), align_overrides=overrides, progress=False
    )
    assert report.inpainting == "lama" and "NOT LaMa" not in report.text()
    manifest = json.loads(out.get("dataset.json"))
    assert manifest["inpainting"] == "lama" and manifest["fallbacks"] == []
    assert "lama" in {m["name"] for m in manifest["models"]}
    assert len(manifest["images"]) == 2
    for row in manifest["images"]:
        assert row["inpainted_area"] > 0.05 and row["inpainted_with"] == "lama"
        pixels = np.asarray(Image.open(io.BytesIO(out.get(row["file"]))))
        mask = np.asarray(Image.open(io.BytesIO(out.get(row["mask"])))) > 0
        assert (pixels[mask] == [64, 128, 191]).all()  # the fake LaMa's colour, and only there
    with pytest.raises(FailedPrecondition, match="needs a LaMa checkpoint"):
        prepare(raw, out, PrepareOptions(size=SIZE, inpaint="lama"), progress=False)
