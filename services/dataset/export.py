"""Export a prepared set to the formats trainers and public tools read.

* ``lmdb``: rosinality's ``prepare_data.py`` layout -- key ``length`` holds the count as text,
  key ``<size>-<index, 5 digits>`` one encoded image per size (JPEG at quality 100 as
  ``prepare_data.py`` writes, or PNG); read by rosinality's ``MultiResolutionDataset`` and our
  trainer's loader.
* ``zip``: NVIDIA StyleGAN2-ADA's ``dataset_tool.py`` layout -- uncompressed PNGs named
  ``00000/img00000000.png`` and a ``dataset.json`` of ``{"labels": [[name, label], ...]}``, or
  ``{"labels": null}`` without labels.
* ``taming``: taming-transformers' custom-data file lists -- ``train.txt`` and ``test.txt``
  with one image path per line (a seeded held-out split) beside the copied ``images/``.

LMDB and ZIP are built in a local folder first (LMDB needs a file system) and uploaded when the
destination is a store prefix.
"""

from __future__ import annotations

import io
import json
import random
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from tqdm import tqdm

from ganfolk.runtime.images import decode_image, encode_png
from ganfolk.runtime.storage import ObjectNotFound
from services.dataset.location import Location
from services.dataset.records import DATASET_JSON

__all__ = ["export_lmdb", "export_taming", "export_zip", "load_manifest"]

# rosinality's prepare_data.py passes map_size=1024**4: address space, not disk (the file grows
# with the data).
_LMDB_MAP_SIZE = 1024**4
_MAX_PIXELS = 1 << 26


def load_manifest(location: Location) -> dict[str, Any]:
    """A prepared set's ``dataset.json``; FileNotFoundError names the location when it has none."""
    try:
        manifest: dict[str, Any] = json.loads(location.get(DATASET_JSON))
    except ObjectNotFound:
        raise FileNotFoundError(
            f"{location} has no {DATASET_JSON}: export reads what `ganfolk dataset prepare` wrote"
        ) from None
    return manifest


def _images(
    location: Location, rows: list[dict[str, Any]], size: int, progress: bool, what: str
) -> Iterator[Image.Image]:
    for row in tqdm(rows, desc=what, unit="img", file=sys.stderr, disable=not progress):
        img = decode_image(location.get(row["file"], row.get("sha256")), _MAX_PIXELS)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.LANCZOS)
        yield img


def _upload(folder: Path, out: Location, names: list[str]) -> list[str]:
    return [out.store.put_file(out.key(n), folder / n).uri for n in names]


def export_lmdb(
    source: Location,
    out: Location,
    *,
    sizes: list[int] | None = None,
    image_format: Literal["jpeg", "png"] = "jpeg",
    quality: int = 100,
    progress: bool = True,
) -> list[str]:
    """Write the set as rosinality's LMDB under ``out``; returns where ``data.mdb`` went."""
    import lmdb

    manifest = load_manifest(source)
    rows = manifest["images"]
    sizes = sizes or [int(manifest["size"])]

    def encode(img: Image.Image) -> bytes:
        if image_format == "png":
            return encode_png(img)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        return buf.getvalue()

    def build(folder: Path) -> None:
        env = lmdb.open(str(folder), map_size=_LMDB_MAP_SIZE, readahead=False)
        try:
            for size in sizes:
                for i, img in enumerate(_images(source, rows, size, progress, f"lmdb {size}px")):
                    with env.begin(write=True) as txn:
                        txn.put(f"{size}-{i:05d}".encode(), encode(img))
            with env.begin(write=True) as txn:
                txn.put(b"length", str(len(rows)).encode())
        finally:
            env.close()

    root = out.local_root
    if root is not None:
        build(root)
        return [str(root / "data.mdb")]
    with tempfile.TemporaryDirectory(prefix="ganfolk-lmdb-") as tmp:
        build(Path(tmp))
        return _upload(Path(tmp), out, ["data.mdb"])


def export_zip(
    source: Location,
    out: Location,
    name: str = "dataset.zip",
    *,
    labels: bool = False,
    progress: bool = True,
) -> str:
    """Write the set as a StyleGAN2-ADA ZIP ``name`` under ``out``; returns its URI or path.

    With ``labels``, each image's label is its source's index in ``dataset.json``'s sources.
    """
    manifest = load_manifest(source)
    rows = manifest["images"]
    size = int(manifest["size"])
    source_index = {s: i for i, s in enumerate(manifest.get("sources", {}))}

    def build(path: Path) -> None:
        entries: list[list[Any]] = []
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            for i, (row, img) in enumerate(
                zip(rows, _images(source, rows, size, progress, "zip"), strict=True)
            ):
                idx = f"{i:08d}"
                arcname = f"{idx[:5]}/img{idx}.png"
                zf.writestr(arcname, encode_png(img))
                entries.append([arcname, source_index.get(row["source"], 0)])
            meta = {"labels": entries if labels else None}
            zf.writestr("dataset.json", json.dumps(meta))

    root = out.local_root
    if root is not None:
        build(root / name)
        return str(root / name)
    with tempfile.TemporaryDirectory(prefix="ganfolk-zip-") as tmp:
        build(Path(tmp) / name)
        return _upload(Path(tmp), out, [name])[0]


def export_taming(
    source: Location,
    out: Location,
    *,
    test_fraction: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> tuple[str, str, int, int]:
    """Copy the images to ``out/images`` and write ``train.txt``/``test.txt``.

    Paths in the lists are absolute for a local destination (taming's ``ImagePaths`` opens them
    as given) and relative to ``out`` for a store prefix. Returns both lists' URIs and counts.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    manifest = load_manifest(source)
    rows = manifest["images"]
    files = [row["file"] for row in rows]
    for row in tqdm(rows, desc="taming", unit="img", file=sys.stderr, disable=not progress):
        out.put(row["file"], source.get(row["file"], row.get("sha256")), "image/png")
    order = sorted(files)
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test_fraction)
    if test_fraction > 0 and len(order) > 1:
        n_test = max(1, min(n_test, len(order) - 1))
    test, train = sorted(order[:n_test]), sorted(order[n_test:])
    root = out.local_root

    def path(rel: str) -> str:
        return str(root / rel) if root is not None else rel

    train_uri = out.put("train.txt", "".join(path(f) + "\n" for f in train).encode(), "text/plain").uri
    test_uri = out.put("test.txt", "".join(path(f) + "\n" for f in test).encode(), "text/plain").uri
    return train_uri, test_uri, len(train), len(test)
