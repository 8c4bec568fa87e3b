"""Training images: read once from a folder, a store prefix or a rosinality LMDB, served from a cache.

Sources
-------
* a folder (a path or ``file:///path``) of PNG/JPEG/WebP/BMP files, searched recursively;
* a store prefix ``s3://bucket/prefix`` in the given :class:`~ganfolk.runtime.storage.ObjectStore`;
* a rosinality ``prepare_data.py`` LMDB (a folder holding ``data.mdb``): key ``length`` holds the
  image count, key ``{size}-{index:05d}`` one encoded image of that size.

A folder or prefix that align's PrepareDataset wrote (``manifest.json``, ``images/``, ``masks/``)
is read through its manifest: only the aligned images it lists, each checked against its sha256.
Without a manifest, an ``images/`` beside a ``masks/`` is read alone; anything else is every image
file under the location.

The cache
---------
:func:`prepare_dataset` decodes every image once, resizes it to the training size and writes them all into
one uint8 ``(N, S, S, 3)`` ``.npy`` under ``cache_dir`` -- named by the source, the size and a hash of
the listing, so a changed source gets a new cache and an unchanged one is reused by every epoch,
restart and rank on the node (a file lock lets one process build it while the others wait). It takes
N x S x S x 3 bytes of local disk: 70,000 faces at 512 px take 55 GB.
:class:`ImageDataset` memory-maps it and returns float CHW tensors in [-1, 1].

Images must be square (aligned faces are): a square image of another size is resized (Lanczos), a
non-square or unreadable one is an error naming the file, found before any GPU time is spent.

Sharding
--------
Each rank builds the same :class:`ImageDataset` and a loader from :func:`make_loader` with its own
``rank``; the :class:`~torch.utils.data.distributed.DistributedSampler` inside gives every rank a
disjoint slice of each epoch's permutation. The loop must call ``sampler.set_epoch(epoch)`` before
each pass over the loader, or every epoch repeats the first permutation; :func:`batches` does that
and loops forever, which is what an iteration-counted GAN loop wants.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.hashing import sha256_hex
from ganfolk.runtime.images import decode_image, encode_png
from ganfolk.runtime.storage import ObjectStore, StorageError, parse_uri, validate_key

__all__ = [
    "IMAGE_SUFFIXES",
    "DatasetError",
    "DatasetInfo",
    "ImageDataset",
    "batches",
    "check_dataset",
    "disc_images",
    "make_disc_dataset",
    "make_loader",
    "prepare_dataset",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# 8192 x 8192: far above any training size, low enough that a decompression bomb is refused.
DEFAULT_MAX_PIXELS = 1 << 26
_MANIFEST = "manifest.json"
_CACHE_VERSION = 2  # 2: meta records the images smaller than the size
_ERRORS_SHOWN = 20

Kind = Literal["folder", "store", "lmdb"]


class DatasetError(InvalidArgument):
    """The training images cannot be used as given; the message names the source or file to fix."""


@dataclass
class _Listing:
    kind: Kind
    location: str  # as shown in messages
    names: list[str]  # one per image, for messages
    fingerprint: str  # changes whenever an image is added, removed or changed
    read: Callable[[int], bytes]
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class DatasetInfo:
    """A prepared dataset: where it came from and where its cache lies."""

    source: str
    kind: Kind
    count: int
    size: int
    resized: int  # images that were not already ``size`` px
    cache: Path  # the .npy file
    smaller: tuple[str, ...] = ()  # names of the images that were upscaled to ``size``

    def describe(self) -> str:
        """One line for a dry run: count, size, source and cache."""
        note = f", {self.resized:,} resized" if self.resized else ""
        return (
            f"{self.count:,} images of {self.size}x{self.size} px from {self.kind} {self.source}"
            f"{note}; cache {self.cache}"
        )


# --------------------------------------------------------------------------- listing sources


def _select(
    files: dict[str, str], read_manifest: Callable[[], bytes], location: str
) -> dict[str, str | None]:
    """The relative names to train on, from ``files`` (every relative name under the location),
    each with the sha256 that align's manifest records for it (None without a manifest)."""
    if _MANIFEST not in files:
        if any(n.startswith("images/") for n in files) and any(n.startswith("masks/") for n in files):
            return {n: None for n in files if n.startswith("images/") and n.lower().endswith(IMAGE_SUFFIXES)}
        return {n: None for n in files if n.lower().endswith(IMAGE_SUFFIXES)}
    try:
        manifest = json.loads(read_manifest())
        # The manifest names images by URI; they lie in images/ beside it, wherever it was copied.
        chosen: dict[str, str | None] = {
            "images/" + face["image"].rsplit("/", 1)[-1]: face["sha256"]
            for entry in manifest["files"]
            for face in entry["faces"]
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(
            f"{location}/{_MANIFEST} is not a manifest of align's PrepareDataset ({exc!r}); "
            "remove it or point at the images/ folder"
        ) from None
    missing = [n for n in chosen if n not in files]
    if missing:
        raise DatasetError(
            f"{location}/{_MANIFEST} lists {len(missing)} images that are not there, e.g. {missing[0]}; "
            "rerun PrepareDataset into this destination"
        )
    return chosen


def _fingerprint(rows: list[tuple[str, str]]) -> str:
    return sha256_hex("\n".join(f"{a}\t{b}" for a, b in rows).encode())


def _empty(location: str) -> DatasetError:
    return DatasetError(
        f"no training images under {location} (looked for {', '.join(IMAGE_SUFFIXES)} files); "
        "check the path, or run align's PrepareDataset into it first"
    )


def _list_folder(folder: Path) -> _Listing:
    files: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            st = path.stat()
            files[rel] = f"{st.st_size}:{st.st_mtime_ns}"
    location = str(folder)
    chosen = _select(files, lambda: (folder / _MANIFEST).read_bytes(), location)
    if not chosen:
        raise _empty(location)
    names = list(chosen)

    def read(i: int) -> bytes:
        data = (folder / names[i]).read_bytes()
        expected = chosen[names[i]]
        if expected is not None and sha256_hex(data) != expected:
            raise DatasetError(f"sha256 of {names[i]} differs from the manifest's: the file changed since")
        return data

    return _Listing("folder", location, names, _fingerprint([(n, files[n]) for n in names]), read)


def _list_prefix(store: ObjectStore, prefix: str, location: str) -> _Listing:
    start = prefix + "/" if prefix else ""
    files = {info.key[len(start) :]: info.sha256 or f"size:{info.size}" for info in store.list(start)}
    files = {k: v for k, v in files.items() if not any(p.startswith(".") for p in k.split("/"))}
    chosen = _select(files, lambda: store.get(start + _MANIFEST), location)
    if not chosen:
        raise _empty(location)
    names = list(chosen)

    def read(i: int) -> bytes:
        return store.get(start + names[i], chosen[names[i]])

    rows = [(n, chosen[n] or files[n]) for n in names]
    return _Listing("store", location, names, _fingerprint(rows), read)


def _list_lmdb(folder: Path, size: int) -> _Listing:
    import lmdb  # only LMDB sources need the binding

    location = str(folder)
    try:
        env = lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as exc:
        raise DatasetError(f"cannot open the LMDB {location}: {exc}") from None
    try:
        with env.begin() as txn:
            raw = txn.get(b"length")
            if raw is None:
                raise DatasetError(
                    f"LMDB {location} has no 'length' key: not a dataset from rosinality's prepare_data.py"
                )
            try:
                count = int(raw.decode())
            except ValueError:
                raise DatasetError(f"LMDB {location}: 'length' is {raw[:20]!r}, not a number") from None
            if count <= 0:
                raise _empty(location)
            stored = size
            if txn.get(f"{size}-00000".encode()) is None:
                sizes = sorted(
                    int(k[:-6]) for k in txn.cursor().iternext(values=False) if k.endswith(b"-00000")
                )
                larger = [s for s in sizes if s > size]
                if not larger:
                    raise DatasetError(
                        f"LMDB {location} holds images of {sizes or 'no'} px but none of {size} px "
                        f"or larger; rerun prepare_data.py with --size {size}"
                    )
                stored = larger[0]
    except BaseException:
        env.close()
        raise

    def read(i: int) -> bytes:
        with env.begin() as txn:
            data = txn.get(f"{stored}-{i:05d}".encode())
        if data is None:
            raise DatasetError(f"key {stored}-{i:05d} is missing though 'length' says {count}")
        return bytes(data)

    st = (folder / "data.mdb").stat()
    names = [f"{stored}-{i:05d}" for i in range(count)]
    fingerprint = _fingerprint([("lmdb", f"{st.st_size}:{st.st_mtime_ns}:{count}:{stored}")])
    return _Listing("lmdb", location, names, fingerprint, read, env.close)


def _open_source(source: str | os.PathLike[str], size: int, store: ObjectStore | None) -> _Listing:
    source = os.fspath(source)
    if not source:
        raise DatasetError("the dataset source is empty: give a folder, an LMDB folder or s3://bucket/prefix")
    if source.startswith("s3://"):
        if store is None:
            raise DatasetError(f"{source} is a store prefix but no object store was configured")
        bucket, _, prefix = source[5:].partition("/")
        prefix = prefix.strip("/")
        try:
            store.key_from_uri(f"s3://{bucket}/probe")
            if prefix:
                validate_key(prefix)
        except ValueError as exc:
            raise DatasetError(
                f"dataset source {source}: not a prefix of the store {store!r} ({exc})"
            ) from None
        return _list_prefix(store, prefix, source.rstrip("/"))
    if source.startswith("file://"):
        try:
            folder = Path("/" + parse_uri(source.rstrip("/"))[2])
        except ValueError as exc:
            raise DatasetError(f"dataset source {source}: {exc}") from None
    elif "://" in source:
        raise DatasetError(f"dataset source {source}: only folders, file:// and s3:// sources are read")
    else:
        folder = Path(source)
    folder = folder.expanduser().resolve()
    if folder.is_file() and folder.name == "data.mdb":
        folder = folder.parent
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    if (folder / "data.mdb").is_file():
        return _list_lmdb(folder, size)
    return _list_folder(folder)


# --------------------------------------------------------------------------- the cache


def _check_size(size: int) -> None:
    if size < 4 or size & (size - 1):
        raise DatasetError(f"training size must be a power of two >= 4 (StyleGAN2 resolutions), got {size}")


def _decode(data: bytes, name: str, size: int, max_pixels: int) -> tuple[np.ndarray | None, str | None, int]:
    """(pixels, None, original side), or (None, why ``name`` cannot be used, 0)."""
    try:
        img = decode_image(data, max_pixels)
    except InvalidArgument as exc:
        return None, f"{name}: {exc}", 0
    w, h = img.size
    if w != h:
        return (
            None,
            f"{name}: {w}x{h} is not square; crop it square (align's PrepareDataset writes squares)",
            0,
        )
    if w != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8), None, w


def _build(listing: _Listing, size: int, dest: Path, max_pixels: int, workers: int) -> tuple[int, list[str]]:
    """Decode every image of ``listing`` into ``dest``/images.npy; returns the number resized and the
    names of those that were smaller than ``size``."""
    n = len(listing.names)
    array = np.lib.format.open_memmap(
        dest / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3)
    )
    errors: list[str] = []
    smaller: list[str] = []
    resized = 0

    def one(i: int) -> tuple[np.ndarray | None, str | None, int]:
        name = listing.names[i]
        try:
            data = listing.read(i)
        except (OSError, StorageError, DatasetError) as exc:
            return None, f"{name}: unreadable: {exc}", 0
        return _decode(data, name, size, max_pixels)

    log.info("decoding %d images from %s into %s", n, listing.location, dest.parent)
    workers = max(1, workers)
    # In chunks: pool.map submits everything at once, and finished images would pile up in memory
    # behind a slow one.
    chunk = workers * 8
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, n, chunk):
            indices = range(start, min(start + chunk, n))
            for i, (pixels, error, side) in zip(indices, pool.map(one, indices), strict=True):
                if error is not None:
                    errors.append(error)
                else:
                    array[i] = pixels
                    resized += side != size
                    if side < size:
                        smaller.append(listing.names[i])
    array.flush()
    del array
    if errors:
        more = f"\n  ... and {len(errors) - _ERRORS_SHOWN} more" if len(errors) > _ERRORS_SHOWN else ""
        raise DatasetError(
            f"{len(errors)} of {n} images in {listing.location} cannot be used; fix or remove them:\n  "
            + "\n  ".join(errors[:_ERRORS_SHOWN])
            + more
        )
    return resized, smaller


def prepare_dataset(
    source: str | os.PathLike[str],
    size: int,
    cache_dir: str | os.PathLike[str],
    *,
    store: ObjectStore | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 8,
) -> DatasetInfo:
    """Decode and resize every image of ``source`` once into a cache under ``cache_dir``.

    Reuses the cache when the source's listing is unchanged. Raises :class:`DatasetError` for a
    missing or empty source, or (listing every offender) corrupt, non-square or missing images.
    """
    _check_size(size)
    listing = _open_source(source, size, store)
    try:
        where = Path(cache_dir).expanduser().resolve()
        where.mkdir(parents=True, exist_ok=True)
        stem = f"{listing.kind}-{sha256_hex(listing.location.encode())[:12]}-{size}px"
        final = where / f"{stem}-{listing.fingerprint[:16]}"
        with open(where / f"{stem}.lock", "w") as lock:
            # One builder per node; the others wait here and then find the finished cache.
            fcntl.flock(lock, fcntl.LOCK_EX)
            meta = _read_meta(final)
            if meta is None:
                tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=where))
                try:
                    resized, smaller = _build(listing, size, tmp, max_pixels, workers)
                    meta = {
                        "version": _CACHE_VERSION,
                        "source": listing.location,
                        "kind": listing.kind,
                        "count": len(listing.names),
                        "size": size,
                        "resized": resized,
                        "smaller": smaller,
                        "fingerprint": listing.fingerprint,
                        "names": listing.names,
                    }
                    (tmp / "meta.json").write_text(json.dumps(meta))
                    shutil.rmtree(final, ignore_errors=True)
                    os.replace(tmp, final)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                # Caches of earlier listings of this source are dead weight (open memmaps survive).
                for old in where.glob(f"{stem}-*"):
                    if old != final and old.is_dir():
                        shutil.rmtree(old, ignore_errors=True)
    finally:
        listing.close()
    return DatasetInfo(
        listing.location,
        listing.kind,
        meta["count"],
        size,
        meta["resized"],
        final / "images.npy",
        tuple(meta["smaller"]),
    )


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta: dict[str, Any] = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("version") == _CACHE_VERSION and (folder / "images.npy").is_file() else None


def check_dataset(
    source: str | os.PathLike[str],
    size: int,
    batch: int,
    cache_dir: str | os.PathLike[str],
    *,
    world_size: int = 1,
    store: ObjectStore | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DatasetInfo:
    """The dry run: :func:`prepare_dataset` the cache and check it fills a batch on every rank.

    ``batch`` is per rank (rosinality's ``--batch``). Raises :class:`DatasetError` on any problem.
    """
    if batch < 1 or world_size < 1:
        raise DatasetError(f"batch and world size must be >= 1, got {batch} and {world_size}")
    info = prepare_dataset(source, size, cache_dir, store=store, max_pixels=max_pixels)
    if info.count < batch * world_size:
        raise DatasetError(
            f"{info.source} holds {info.count} images, fewer than one batch of {batch} on each of "
            f"{world_size} rank(s) ({batch * world_size}); add images or lower the batch size"
        )
    return info


# --------------------------------------------------------------------------- torch side


class ImageDataset(Dataset[Tensor]):
    """A prepared cache as float32 (3, S, S) tensors in [-1, 1], optionally x-flipped at random.

    The memory map opens lazily in each process, so the dataset pickles cheaply into loader workers.
    """

    def __init__(self, cache: DatasetInfo | str | os.PathLike[str], xflip: bool = False) -> None:
        self.path = cache.cache if isinstance(cache, DatasetInfo) else Path(cache)
        if not self.path.is_file():
            raise DatasetError(f"dataset cache not found: {self.path}; run prepare_dataset() first")
        shape = np.load(self.path, mmap_mode="r").shape
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise DatasetError(f"{self.path} is not a dataset cache: array shape {shape}")
        self.count, self.size = int(shape[0]), int(shape[1])
        self.xflip = xflip
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Tensor:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        pixels = torch.from_numpy(np.array(self._array[index])).permute(2, 0, 1)
        if self.xflip and torch.rand(()) < 0.5:
            pixels = pixels.flip(2)
        return pixels.float().div_(127.5).sub_(1.0)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}


def make_loader(
    dataset: Dataset[Tensor],
    batch: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    workers: int = 2,
) -> DataLoader[Tensor]:
    """Shuffled, ``drop_last`` batches of this rank's shard (see the module docstring on epochs)."""
    sampler: DistributedSampler[Tensor] = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )


def batches(loader: DataLoader[Tensor]) -> Iterator[Tensor]:
    """Batches forever, reshuffling every epoch (``set_epoch`` on the loader's DistributedSampler)."""
    sampler = loader.sampler
    epoch = 0
    while True:
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise DatasetError("the data loader yields no full batch: fewer images per rank than the batch")
        epoch += 1


# --------------------------------------------------------------------------- synthetic data


def disc_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` images (n, size, size, 3) uint8: one coloured, anti-aliased disc on a flat background.

    A toy distribution for smoke tests: a generator that learns it draws round blobs quickly.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        background, colour = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        radius = rng.uniform(size / 6, size / 3)
        cx, cy = rng.uniform(radius, size - radius, 2)
        cover = np.clip(radius - np.hypot(xx - cx, yy - cy) + 0.5, 0.0, 1.0)[..., None]
        out[i] = np.round(background * (1 - cover) + colour * cover).astype(np.uint8)
    return out


def make_disc_dataset(folder: str | os.PathLike[str], n: int, size: int, seed: int = 0) -> list[Path]:
    """Write :func:`disc_images` as ``disc-00000.png``... into ``folder``; returns the paths."""
    if n < 1 or size < 4:
        raise ValueError(f"need n >= 1 and size >= 4, got n={n}, size={size}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, pixels in enumerate(disc_images(n, size, seed)):
        path = out / f"disc-{i:05d}.png"
        path.write_bytes(encode_png(pixels))
        paths.append(path)
    return paths
