"""Collecting: the metadata readers, licences, polite downloads with their failures, resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.dataset.collect import CollectOptions, collect
from services.dataset.fetch import USER_AGENT, Fetcher, FetchPolicy
from services.dataset.licences import is_allowed, licence_url, normalise_licence, parse_allow_list
from services.dataset.location import open_location
from services.dataset.records import load_records
from services.dataset.sources import MissingColumns, WikiArtFilter, open_images, url_list, wikiart
from tests.dataset.helpers import (
    BOX_HEADER,
    OPEN_IMAGES_HEADER,
    Route,
    bomb_png,
    encode,
    faces,
    serve,
    write_csv,
    write_wikiart,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = FetchPolicy(timeout_s=0.5, deadline_s=5.0, attempts=2, retry_wait_s=0.05, per_host=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://creativecommons.org/licenses/by/2.0/", "CC-BY-2.0"),
        ("http://creativecommons.org/licenses/by-sa/4.0/deed.en", "CC-BY-SA-4.0"),
        ("https://creativecommons.org/licenses/by-nc-nd/3.0/", "CC-BY-NC-ND-3.0"),
        ("https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
        ("https://creativecommons.org/publicdomain/mark/1.0/", "public-domain"),
        ("CC BY-SA 4.0", "CC-BY-SA-4.0"),
        ("cc-by", "CC-BY"),
        ("CC BY 2.0 Generic", "CC-BY-2.0"),
        ("Public domain", "public-domain"),
        ("CC0", "CC0-1.0"),
        ("All rights reserved", None),
        ("https://example.com/licence", None),
        ("", None),
    ],
)
def test_licences_normalise_to_spdx_like_ids(text: str, expected: str | None) -> None:
    assert normalise_licence(text) == expected


def test_allow_list_by_family_or_exact_id() -> None:
    allowed = parse_allow_list(["cc-by", "CC-BY-SA-4.0"])
    assert is_allowed("CC-BY-2.0", allowed) and is_allowed("CC-BY-SA-4.0", allowed)
    assert not is_allowed("CC-BY-SA-3.0", allowed) and not is_allowed("CC-BY-NC-2.0", allowed)
    assert licence_url("CC-BY-SA-4.0") == "https://creativecommons.org/licenses/by-sa/4.0/"
    with pytest.raises(ValueError, match="unknown licence 'copyleft-ish'"):
        parse_allow_list(["copyleft-ish"])


def test_csv_missing_columns_are_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mine.csv", ["url", "title"], [{"url": "http://x/a.jpg"}])
    with pytest.raises(MissingColumns, match=r"mine\.csv lacks the columns licence, author"):
        list(url_list(path))
    boxes = write_csv(tmp_path / "boxes.csv", ["ImageID", "LabelName"], [])
    images = write_csv(tmp_path / "ids.csv", OPEN_IMAGES_HEADER, [])
    with pytest.raises(MissingColumns, match="XMin, XMax, YMin, YMax, IsGroupOf"):
        list(open_images(images, [boxes]))


def test_open_images_keeps_single_face_photos(tmp_path: Path) -> None:
    images = write_csv(
        tmp_path / "image_ids_and_rotation.csv",
        OPEN_IMAGES_HEADER,
        [
            {
                "ImageID": i,
                "OriginalURL": f"http://h/{i}.jpg",
                "License": "https://creativecommons.org/licenses/by/2.0/",
                "Author": f"author {i}",
                "Title": f"title {i}",
                "OriginalLandingURL": f"https://flickr/{i}",
                "Rotation": r,
            }
            for i, r in [("a1", "0.0"), ("b2", "90.0"), ("c3", ""), ("d4", "nan"), ("e5", "0")]
        ]
        + [{"ImageID": "bad id!", "OriginalURL": "http://h/x.jpg"}],
    )

    def box(
        image: str, label: str = "/m/0dzct", x: tuple[float, float] = (0.2, 0.6), group: str = "0"
    ) -> dict[str, str]:
        return {
            "ImageID": image,
            "LabelName": label,
            "XMin": str(x[0]),
            "XMax": str(x[1]),
            "YMin": "0.1",
            "YMax": "0.5",
            "IsGroupOf": group,
        }

    boxes = write_csv(
        tmp_path / "oidv6-train-annotations-bbox.csv",
        BOX_HEADER,
        [
            box("a1"),  # one face: kept
            box("b2"),
            box("b2", "/m/01g317"),  # a face and a person: kept
            box("c3"),
            box("c3"),  # two faces: dropped
            box("d4", x=(0.1, 0.12)),  # a tiny face: dropped
            box("e5", group="1"),  # a group of faces: dropped
            box("zz", label="/m/0dzct"),  # not in the image list
        ],
    )
    found = list(open_images(images, [boxes], max_faces=1, min_face_width=0.1))
    kept = [c for c in found if not hasattr(c, "category")]
    assert [c.item_id for c in kept] == ["oi-a1", "oi-b2"]
    assert kept[1].extra["rotation"] == 90 and kept[1].source_page == "https://flickr/b2"
    assert kept[0].author == "author a1" and kept[0].licence.endswith("/by/2.0/")
    assert [getattr(c, "category", "") for c in found if hasattr(c, "category")] == ["corrupt row"]


def test_wikiart_parquet_labels_filters_and_corrupt_rows(tmp_path: Path) -> None:
    img = encode(faces()["painted"])
    rows = [
        {
            "image": {"bytes": img, "path": "john-singer-sargent_madame-x-1884.jpg"},
            "artist": 2,
            "genre": 2,
            "style": 2,
        },
        {"image": {"bytes": img, "path": None}, "artist": 1, "genre": 2, "style": 3},
        {"image": {"bytes": img, "path": None}, "artist": 3, "genre": 1, "style": 1},  # landscape
        {"image": {"bytes": img, "path": None}, "artist": 3, "genre": 2, "style": 1},  # Post_Impressionism
        {"image": {"bytes": None, "path": None}, "artist": 1, "genre": 2, "style": 2},  # no bytes
        {"image": {"bytes": img, "path": None}, "artist": 42, "genre": 2, "style": 2},  # artist out of range
    ]
    good = write_wikiart(tmp_path / "train-00000-of-00002.parquet", rows)
    broken = tmp_path / "train-00001-of-00002.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file")
    flt = WikiArtFilter(genres=("portrait",), styles=("Realism", "romanticism", "Impressionism"))
    found = list(wikiart([good, broken], flt))
    items = [c for c in found if not hasattr(c, "category")]
    assert [c.item_id for c in items] == ["wa-train-00000-of-00002-000000", "wa-train-00000-of-00002-000001"]
    first = items[0]
    assert first.author == "John Singer Sargent" and first.title == "Madame x"
    assert first.extra == {
        "artist": "john-singer-sargent",
        "genre": "portrait",
        "style": "Realism",
        "year": 1884,
        "path": "john-singer-sargent_madame-x-1884.jpg",
    }
    assert first.source_page == "https://www.wikiart.org/en/john-singer-sargent/madame-x-1884"
    assert items[1].author == "Ivan Aivazovsky" and items[1].extra["style"] == "Romanticism"
    reasons = sorted(c.category for c in found if hasattr(c, "category"))
    assert reasons == ["corrupt parquet", "corrupt row", "corrupt row"]
    # Years: only the row whose path carries one survives a year filter; the others say why.
    dated = list(wikiart([good], WikiArtFilter(genres=("portrait",), after=1850, before=1900)))
    assert [c.item_id for c in dated if not hasattr(c, "category")] == ["wa-train-00000-of-00002-000000"]
    assert sum(getattr(c, "category", "") == "no date" for c in dated) == 2
    with pytest.raises(ValueError, match="unknown style Cubism; the dump has: Impressionism"):
        list(wikiart([good], WikiArtFilter(styles=("Cubism",))))


def _url_csv(tmp_path: Path, server_url: str, names: list[str], licence: str = "CC BY 4.0") -> Path:
    return write_csv(
        tmp_path / "my_images.csv",
        ["url", "licence", "author", "title", "source_page"],
        [
            {
                "url": f"{server_url}/{n}",
                "licence": licence if n != "odd-licence.jpg" else "do what you like",
                "author": f"Author {n}",
                "title": f"Title {n}",
                "source_page": f"https://example.org/{n}",
            }
            for n in names
        ],
    )


def test_collect_counts_every_bad_url_and_keeps_records(tmp_path: Path) -> None:
    pics = faces()
    routes = {
        "/a.jpg": Route(encode(pics["upright"])),
        "/b.png": Route(encode(pics["turned"], "PNG"), content_type="image/png"),
        "/octet.jpg": Route(encode(pics["mirrored"]), content_type="application/octet-stream"),
        "/page.jpg": Route(b"<html>moved</html>", content_type="text/html"),
        "/slow.jpg": Route(encode(pics["tilted"]), delay=2.0),
        "/bomb.png": Route(bomb_png(), content_type="image/png"),
        "/broken.jpg": Route(encode(pics["upright"])[:300]),
        "/flaky.jpg": Route(b"", status=503),
        "/odd-licence.jpg": Route(encode(pics["painted"])),
    }
    names = [p.lstrip("/") for p in routes] + ["gone.jpg"]
    with serve(routes) as server:
        csv_path = _url_csv(tmp_path, server.url, names)
        location = open_location(str(tmp_path / "raw" / "mine"))
        options = CollectOptions(kind="urls", max_items=100, max_pixels=40_000_000, workers=4)
        report = collect(location, url_list(csv_path), options, Fetcher(FAST), progress=False)
        assert report.now == 3 and report.total == 3
        dropped = {reason: sum(c.values()) for reason, c in report.tally.dropped.items()}
        assert dropped == {
            "HTTP 404": 1,
            "HTTP 503": 1,
            "not an image (text/html)": 1,
            "timed out": 1,
            "over the pixel limit": 1,
            "corrupt image": 1,
            "unknown licence": 1,
        }
        text = report.text()
        assert "HTTP 404" in text and "unknown licence" in text and "3 of 100 wanted" in text
        assert server.hits("/flaky.jpg") == 2  # retried once (attempts=2), then recorded
        assert server.hits("/odd-licence.jpg") == 0  # refused before any download
        assert server.peak <= FAST.per_host
        assert {ua for _, ua in server.requests} == {USER_AGENT}

        records = load_records(location)
        done = {r["id"]: r for r in records.values() if r["state"] == "done"}
        assert len(done) == 3
        rec = next(r for r in done.values() if r["source_url"].endswith("/b.png"))
        assert rec["licence"] == "CC-BY-4.0" and rec["licence_text"] == "CC BY 4.0"
        assert rec["author"] == "Author b.png" and rec["title"] == "Title b.png"
        assert rec["source_page"] == "https://example.org/b.png" and rec["format"] == "PNG"
        assert rec["width"] == rec["height"] == 256 and rec["collected_at"]
        assert location.get(rec["image"], rec["sha256"]) == routes["/b.png"].body
        failed = {r["category"]: r for r in records.values() if r["state"] == "failed"}
        assert failed["HTTP 503"]["retry"] and not failed["HTTP 404"]["retry"]
        summary = json.loads(location.get("collection.json"))
        assert summary["collected"] == 3 and summary["this_run"]["dropped"]["HTTP 404"] == {"": 1}

        # A rerun downloads nothing that is done or failed for good; it retries only what may pass.
        before = len(server.requests)
        again = collect(location, url_list(csv_path), options, Fetcher(FAST), progress=False)
        retried = sorted(p for p, _ in server.requests[before:])
        assert retried == ["/flaky.jpg", "/flaky.jpg", "/slow.jpg", "/slow.jpg"]
        assert again.before == 3 and again.now == 0
        assert sum(again.tally.dropped["failed earlier: HTTP 404"].values()) == 1


def test_collect_stops_at_max_and_filters_licences(tmp_path: Path) -> None:
    pics = faces()
    routes = {f"/{i}.jpg": Route(encode(pics["upright"])) for i in range(6)}
    with serve(routes) as server:
        rows = [
            {"url": f"{server.url}/{i}.jpg", "licence": lic, "author": "A"}
            for i, lic in enumerate(
                ["CC BY-NC 2.0", "CC BY 2.0", "CC BY-SA 4.0", "CC BY 2.0", "CC BY 2.0", "CC0"]
            )
        ]
        csv_path = write_csv(tmp_path / "u.csv", ["url", "licence", "author"], rows)
        location = open_location(str(tmp_path / "out"))
        options = CollectOptions(
            kind="urls",
            max_items=3,
            max_pixels=40_000_000,
            workers=2,
            allowed=parse_allow_list(["cc-by", "cc-by-sa"]),
        )
        report = collect(location, url_list(csv_path), options, Fetcher(FAST), progress=False)
        assert report.total == 3
        assert sum(report.tally.dropped["licence not allowed"].values()) == 1
        assert sorted(p for p, _ in server.requests) == ["/1.jpg", "/2.jpg", "/3.jpg"]


def test_a_killed_collection_resumes_without_losing_or_redoing_work(tmp_path: Path) -> None:
    pics = faces()
    body = encode(pics["upright"])
    routes = {f"/{i:02d}.jpg": Route(body, delay=0.25) for i in range(12)}
    with serve(routes) as server:
        csv_path = _url_csv(tmp_path, server.url, [p.lstrip("/") for p in routes])
        out = tmp_path / "raw" / "photos"
        cmd = [
            sys.executable,
            "-m",
            "ganfolk.cli",
            "dataset",
            "collect",
            "urls",
            "--csv",
            str(csv_path),
            "--out",
            str(out),
            "--workers",
            "1",
            "--no-progress",
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = list((out / "items").glob("*.json")) if (out / "items").is_dir() else []
                if len(done) >= 3:
                    break
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        first = {
            r["source_url"] for r in load_records(open_location(str(out))).values() if r["state"] == "done"
        }
        assert 3 <= len(first) < 12
        requested_before = len(server.requests)
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "total                    12 of 1000000 wanted" in result.stdout
        again = [f"{server.url}{p}" for p, _ in server.requests[requested_before:]]
        assert not set(again) & first, "a finished image was downloaded again"
        records = load_records(open_location(str(out)))
        assert sorted(r["source_url"] for r in records.values() if r["state"] == "done") == sorted(
            f"{server.url}{p}" for p in routes
        )
        # Every stored image is whole: it matches its record's sha256.
        location = open_location(str(out))
        for r in records.values():
            assert location.get(r["image"], r["sha256"]) == body


def test_cli_collect_reports_missing_columns(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "my_images.csv", ["url", "title"], [{"url": "http://127.0.0.1:9/a.jpg"}])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ganfolk.cli",
            "dataset",
            "collect",
            "urls",
            "--csv",
            str(csv_path),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "my_images.csv lacks the columns licence, author" in result.stderr
    assert "Traceback" not in result.stderr
