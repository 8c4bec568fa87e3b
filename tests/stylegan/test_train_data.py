"""Training data: sources (folder, store prefix, LMDB), the per-node cache, validation, sharding."""

from __future__ import annotations

import io
import itertools
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.images import encode_png
from ganfolk.runtime.storage import LocalStore, ObjectStore
from services.stylegan.training.data import (
    DatasetError,
    ImageDataset,
    batches,
    check_dataset,
    disc_images,
    make_disc_dataset,
    make_loader,
    prepare_dataset,
)


@pytest.fixture
def discs(tmp_path: Path) -> Path:
    make_disc_dataset(tmp_path / "discs", 6, 16, seed=1)
    return tmp_path / "discs"


def test_folder_cache_and_tensors(discs: Path, tmp_path: Path) -> None:
    info = prepare_dataset(discs, 16, tmp_path / "cache", workers=2)
    assert (info.kind, info.count, info.size, info.resized) == ("folder", 6, 16, 0)
    assert "6 images of 16x16 px" in info.describe()
    ds = ImageDataset(info)
    x = ds[2]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    expected = torch.from_numpy(disc_images(6, 16, seed=1)[2]).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(x, expected)

    # Unchanged source: the same cache, not rebuilt; a new image: a new cache, the old one removed.
    mtime = info.cache.stat().st_mtime_ns
    assert prepare_dataset(discs, 16, tmp_path / "cache").cache.stat().st_mtime_ns == mtime
    (discs / "extra.png").write_bytes(encode_png(disc_images(1, 16, seed=9)[0]))
    again = prepare_dataset(discs, 16, tmp_path / "cache")
    assert again.count == 7 and again.cache != info.cache and not info.cache.exists()


def test_xflip_and_resize(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    big = disc_images(1, 32, seed=3)[0]
    (folder / "big.png").write_bytes(encode_png(big))
    info = prepare_dataset(folder, 16, tmp_path / "cache")
    assert info.resized == 1
    ds = ImageDataset(info, xflip=True)
    plain = torch.from_numpy(np.array(Image.fromarray(big).resize((16, 16), Image.Resampling.LANCZOS)))
    plain = plain.permute(2, 0, 1).float() / 127.5 - 1
    seen = {bool(torch.equal(ds[0], plain.flip(2))) for _ in range(40)}
    assert seen == {True, False}


def test_bad_images_are_listed_by_name(discs: Path, tmp_path: Path) -> None:
    (discs / "wide.png").write_bytes(encode_png(np.zeros((16, 24, 3), np.uint8)))
    (discs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DatasetError, match="2 of 8 images") as err:
        prepare_dataset(discs, 16, tmp_path / "cache")
    assert isinstance(err.value, InvalidArgument)
    assert "wide.png: 24x16 is not square" in str(err.value) and "broken.png" in str(err.value)
    assert not list((tmp_path / "cache").glob("folder-*px-*"))  # nothing half-built left behind


def test_empty_missing_and_too_few(tmp_path: Path, discs: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(DatasetError, match="no training images under"):
        prepare_dataset(tmp_path / "empty", 16, tmp_path / "cache")
    with pytest.raises(DatasetError, match="not found"):
        prepare_dataset(tmp_path / "nowhere", 16, tmp_path / "cache")
    with pytest.raises(DatasetError, match="power of two"):
        prepare_dataset(discs, 24, tmp_path / "cache")
    with pytest.raises(DatasetError, match="fewer than one batch of 4 on each of 2 rank"):
        check_dataset(discs, 16, 4, tmp_path / "cache", world_size=2)
    assert check_dataset(discs, 16, 3, tmp_path / "cache", world_size=2).count == 6
    with pytest.raises(DatasetError, match="no object store"):
        prepare_dataset("s3://bucket/x", 16, tmp_path / "cache")


def _write_align_output(store: ObjectStore, dest: str, n: int) -> list[np.ndarray]:
    """The layout align's PrepareDataset writes: images/, masks/, done/ and manifest.json."""
    pixels = list(disc_images(n, 16, seed=5))
    files = []
    for i, img in enumerate(pixels):
        ref = store.put(f"{dest}/images/face{i}.png", encode_png(img))
        store.put(f"{dest}/masks/face{i}.png", encode_png(np.zeros((16, 16), np.uint8)))
        store.put(f"{dest}/done/face{i}.json", b"{}")
        files.append({"source": f"face{i}.jpg", "faces": [{"image": ref.uri, "sha256": ref.sha256}]})
    # An image left over from an earlier run, no longer in the manifest, must not be read.
    store.put(f"{dest}/images/stale.png", encode_png(np.full((16, 16, 3), 255, np.uint8)))
    store.put(f"{dest}/manifest.json", json.dumps({"files": files}).encode())
    return pixels


def _check_align_output(
    info_source: str, store: ObjectStore | None, cache: Path, kind: str, pixels: list[np.ndarray]
) -> None:
    info = prepare_dataset(info_source, 16, cache, store=store)
    assert (info.kind, info.count) == (kind, len(pixels))
    ds = ImageDataset(info)
    got = {tuple(((ds[i] + 1) * 127.5).round().to(torch.uint8).flatten().tolist()) for i in range(len(ds))}
    assert got == {tuple(torch.from_numpy(p).permute(2, 0, 1).flatten().tolist()) for p in pixels}


def test_align_output_in_a_local_store(local_store: LocalStore, tmp_path: Path) -> None:
    pixels = _write_align_output(local_store, "runs/aligned", 3)
    _check_align_output(local_store.uri("runs/aligned"), None, tmp_path / "cache", "folder", pixels)
    # A manifest whose image was edited afterwards: the sha256 check names the file.
    (tmp_path / "objects/runs/aligned/images/face1.png").write_bytes(encode_png(pixels[0]))
    with pytest.raises(DatasetError, match=r"face1\.png.*differs from the manifest"):
        prepare_dataset(local_store.uri("runs/aligned"), 16, tmp_path / "cache")


def test_align_output_on_s3(s3_store: ObjectStore, tmp_path: Path) -> None:
    pixels = _write_align_output(s3_store, "team/aligned", 2)
    _check_align_output(s3_store.uri("team/aligned"), s3_store, tmp_path / "cache", "store", pixels)
    # A plain prefix of images, no manifest.
    s3_store.put("plain/a.png", encode_png(pixels[0]))
    s3_store.put("plain/b.txt", b"not an image")
    _check_align_output(s3_store.uri("plain"), s3_store, tmp_path / "cache", "store", pixels[:1])
    with pytest.raises(DatasetError, match="no training images under"):
        prepare_dataset(s3_store.uri("nothing-here"), 16, tmp_path / "cache", store=s3_store)
    with pytest.raises(DatasetError, match="not a prefix of the store"):
        prepare_dataset("s3://another-bucket/x", 16, tmp_path / "cache", store=s3_store)


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=100)
    return buf.getvalue()


def test_rosinality_lmdb(tmp_path: Path) -> None:
    import lmdb

    pixels = disc_images(3, 32, seed=7)
    with lmdb.open(str(tmp_path / "lmdb"), map_size=1 << 24) as env, env.begin(write=True) as txn:
        for i, img in enumerate(pixels):
            txn.put(f"32-{i:05d}".encode(), _jpeg(img))
            txn.put(f"8-{i:05d}".encode(), _jpeg(img[::4, ::4]))
        txn.put(b"length", b"3")
    info = prepare_dataset(tmp_path / "lmdb", 32, tmp_path / "cache")
    assert (info.kind, info.count, info.resized) == ("lmdb", 3, 0)
    assert np.abs(np.load(info.cache)[1].astype(int) - pixels[1]).mean() < 2  # JPEG at quality 100
    assert (
        prepare_dataset(tmp_path / "lmdb" / "data.mdb", 16, tmp_path / "cache").resized == 3
    )  # from the 32 px
    with pytest.raises(DatasetError, match=r"holds images of \[8, 32\] px but none of 64 px"):
        prepare_dataset(tmp_path / "lmdb", 64, tmp_path / "cache")
    with lmdb.open(str(tmp_path / "other"), map_size=1 << 20) as env, env.begin(write=True) as txn:
        txn.put(b"hello", b"world")
    with pytest.raises(DatasetError, match="no 'length' key"):
        prepare_dataset(tmp_path / "other", 32, tmp_path / "cache")


def test_sharded_loader(discs: Path, tmp_path: Path) -> None:
    ds = ImageDataset(prepare_dataset(discs, 16, tmp_path / "cache"))
    first = ds[0]
    # Loader workers get a pickled copy: it carries the path, not the open memory map.
    assert torch.equal(pickle.loads(pickle.dumps(ds))[0], first)
    shards = []
    for rank in range(2):
        loader = make_loader(ds, 3, rank=rank, world_size=2, seed=4, workers=0)
        shards.append({tuple(b.flatten()[:8].tolist()) for b in next(iter(loader)).unbind(0)})
    assert len(shards[0] | shards[1]) == 6  # disjoint halves of the six images
    loader = make_loader(ds, 3, rank=0, world_size=2, seed=4, workers=0)
    epochs = [b for b in itertools.islice(batches(loader), 4)]
    assert all(b.shape == (3, 3, 16, 16) for b in epochs)
    assert not all(torch.equal(epochs[0], b) for b in epochs[1:])  # reshuffled every epoch
