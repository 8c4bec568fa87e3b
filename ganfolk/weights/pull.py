"""``ganfolk models pull``: fetch public checkpoints, verify them, store them under ``models/``.

Each file of a manifest entry is downloaded into a cache folder (resumable), checked against
its published digest (a mismatch deletes it and names both hashes), decompressed when the
publisher compresses it, put into the object store as ``models/<file>``, and turned into the
``GANFOLK_*`` settings that point the services at it. Only a person running the command
reaches a public host; nothing else in GANfolk imports this module.
"""

from __future__ import annotations

import bz2
import mimetypes
import shlex
import shutil
import sys
import urllib.parse
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ganfolk.runtime.storage import ObjectStore
from ganfolk.weights.download import ChecksumError, DownloadError, download, file_digests
from ganfolk.weights.manifest import ModelEntry, ModelFile

__all__ = [
    "PullOptions",
    "PulledFile",
    "export_lines",
    "pull_entry",
    "pull_file",
    "select",
    "settings_for",
    "update_env_file",
]

STORE_PREFIX = "models"


@dataclass(frozen=True)
class PullOptions:
    """How to fetch: where partial downloads live, timeouts and retries, whether to re-fetch."""

    cache_dir: Path
    timeout: float = 30.0
    attempts: int = 5
    retry_wait: float = 1.0
    progress: bool = True
    # Download again even when the store already holds a matching file.
    force: bool = False


@dataclass(frozen=True)
class PulledFile:
    """One file in the store, and where a local copy is for settings that read only files."""

    model: str
    file: str
    key: str
    uri: str
    sha256: str
    size: int
    # A local path holding the same bytes: the store's own file for a file store, else a kept copy.
    local: Path | None
    # True when the store already held it and nothing was downloaded.
    cached: bool


def select(entries: Mapping[str, ModelEntry], names: Sequence[str]) -> list[ModelEntry]:
    """The entries named (all of them when ``names`` is empty); an unknown name is an error."""
    if not names:
        return list(entries.values())
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise KeyError(f"unknown model(s) {unknown}; `ganfolk models list` shows: {', '.join(entries)}")
    return [entries[n] for n in dict.fromkeys(names)]


def _local_path_of(uri: str) -> Path | None:
    if not uri.startswith("file://"):
        return None
    return Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path))


def _needs_local(f: ModelFile) -> bool:
    return "{local}" in f.settings.values()


def _verify(path: Path, f: ModelFile, what: str) -> str:
    """Check size and sha256 of the final file; delete it and raise on a mismatch."""
    digests = file_digests(path)
    if f.size is not None and digests.size != f.size:
        path.unlink(missing_ok=True)
        raise ChecksumError(what, "size", f"{f.size} bytes", f"{digests.size} bytes")
    if f.sha256 is not None and digests.sha256 != f.sha256:
        path.unlink(missing_ok=True)
        raise ChecksumError(what, "sha256", f.sha256, digests.sha256)
    return digests.sha256


def _decompress_bz2(src: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        with bz2.open(src, "rb") as fin, tmp.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except (OSError, EOFError) as exc:
        tmp.unlink(missing_ok=True)
        src.unlink(missing_ok=True)
        raise DownloadError(f"{src.name} is not a valid bz2 file ({exc}); it was deleted") from exc
    tmp.replace(dest)
    src.unlink()


def _fetch_url(f: ModelFile, options: PullOptions, label: str) -> Path:
    dest = options.cache_dir / f.file
    fetched = dest.with_name(dest.name + ".bz2") if f.decompress == "bz2" else dest
    download(
        f.url,
        fetched,
        timeout=options.timeout,
        attempts=options.attempts,
        retry_wait=options.retry_wait,
        progress=options.progress,
        label=label,
    )
    if f.md5 is not None:
        # The publisher's digest covers the file as published (before decompression).
        actual = file_digests(fetched).md5
        if actual != f.md5:
            fetched.unlink(missing_ok=True)
            raise ChecksumError(f"{f.file} from {f.url}", "md5", f.md5, actual)
    if f.decompress == "bz2":
        _decompress_bz2(fetched, dest)
    return dest


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in z.namelist())


def _as_safetensors(src: Path, dest: Path) -> None:
    """Write the weights of an open_clip download as a plain safetensors state dict.

    OpenAI's own checkpoints are TorchScript archives, which ``torch.load(weights_only=True)``
    (what the CLIP loader uses) refuses; their tensors are taken out exactly as open_clip does.
    """
    import torch
    from safetensors.torch import save_file

    if src.suffix == ".safetensors":
        shutil.copyfile(src, dest)
        return
    if _is_torchscript(src):
        state = torch.jit.load(str(src), map_location="cpu").state_dict()
        for key in ("input_resolution", "context_length", "vocab_size"):
            state.pop(key, None)
        # A scripted module's state dict also holds its non-persistent buffers; attention masks
        # are rebuilt from the config, never weights, and a strict load would reject them.
        state = {k: v for k, v in state.items() if k.rpartition(".")[2] != "attn_mask"}
    else:
        loaded = torch.load(src, map_location="cpu", weights_only=True)
        state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(state, dict):
            raise DownloadError(f"open_clip returned {src}, which holds no state dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(dest))


def _fetch_open_clip(f: ModelFile, options: PullOptions) -> Path:
    """Fetch through open_clip's pretrained registry (hub first, then the publisher's URL)."""
    from ganfolk.runtime import tv_compat  # noqa: F401  (before open_clip: it imports torchvision)

    # isort: split
    import open_clip.pretrained as pretrained

    arch, tag = f.open_clip.split(":")
    cfg = pretrained.get_pretrained_cfg(arch, tag)
    if not cfg:
        raise DownloadError(f"open_clip knows no pretrained weights {arch!r} with tag {tag!r}")
    cache = options.cache_dir / "open_clip"
    try:
        got = pretrained.download_pretrained(cfg, prefer_hf_hub=True, cache_dir=str(cache))
    except Exception as hub_error:
        if not cfg.get("url") or not cfg.get("hf_hub"):
            raise DownloadError(f"open_clip could not fetch {f.open_clip}: {hub_error}") from hub_error
        print(f"  the hub failed ({hub_error}); trying {cfg['url']}", file=sys.stderr)
        try:
            got = pretrained.download_pretrained(cfg, prefer_hf_hub=False, cache_dir=str(cache))
        except Exception as exc:
            raise DownloadError(f"open_clip could not fetch {f.open_clip}: {exc}") from exc
    if not got:
        raise DownloadError(f"open_clip has no download for {f.open_clip}")
    dest = options.cache_dir / f.file
    _as_safetensors(Path(got), dest)
    # The converted copy is what gets stored; a second copy of ~600 MB is not worth keeping.
    shutil.rmtree(cache, ignore_errors=True)
    return dest


def pull_file(entry: ModelEntry, f: ModelFile, store: ObjectStore, options: PullOptions) -> PulledFile:
    """Fetch, verify and store one file; reuse the stored copy when its hash already matches."""
    key = f"{STORE_PREFIX}/{f.file}"
    uri = store.uri(key)
    local_store_path = _local_path_of(uri)
    keep_copy = options.cache_dir / f.file
    if not options.force and store.exists(key):
        info = store.stat(key)
        if info.sha256 is not None and (f.sha256 is None or info.sha256 == f.sha256):
            local = local_store_path
            if local is None and _needs_local(f):
                if not keep_copy.is_file() or file_digests(keep_copy).sha256 != info.sha256:
                    store.get_file(key, keep_copy, info.sha256)
                local = keep_copy
            print(f"{f.file}: already in the store ({uri})", file=sys.stderr)
            return PulledFile(entry.name, f.file, key, uri, info.sha256, info.size, local, cached=True)

    label = f"{entry.name}/{f.file}"
    print(f"{f.file}: fetching {f.source}", file=sys.stderr)
    path = _fetch_open_clip(f, options) if f.open_clip else _fetch_url(f, options, label)
    sha256 = _verify(path, f, f"{f.file} from {f.source}")
    content_type = mimetypes.guess_type(f.file)[0] or "application/octet-stream"
    info = store.put_file(key, path, content_type, {"model": entry.name, "source": f.source})
    if info.sha256 is not None and info.sha256 != sha256:
        raise DownloadError(f"{f.file}: the store recorded sha256 {info.sha256}, the download was {sha256}")
    local = local_store_path
    if local is None and _needs_local(f):
        local = path  # settings such as the dlib models read local files only
    else:
        path.unlink()
    if f.sha256 is None:
        print(f"{f.file}: sha256 {sha256} (no published digest: pin this one)", file=sys.stderr)
    return PulledFile(entry.name, f.file, key, uri, sha256, info.size, local, cached=False)


def pull_entry(entry: ModelEntry, store: ObjectStore, options: PullOptions) -> list[PulledFile]:
    """Pull every file of one manifest entry; see :func:`pull_file`."""
    options.cache_dir.mkdir(parents=True, exist_ok=True)
    return [pull_file(entry, f, store, options) for f in entry.files]


def settings_for(entry: ModelEntry, pulled: Iterable[PulledFile]) -> dict[str, str]:
    """The ``GANFOLK_*`` settings an entry fills, with its stored files' URIs and hashes."""
    by_file = {p.file: p for p in pulled}
    out = dict(entry.settings)
    for f in entry.files:
        p = by_file[f.file]
        for name, template in f.settings.items():
            if template == "{uri}":
                out[name] = p.uri
            elif template == "{sha256}":
                out[name] = p.sha256
            elif template == "{local}":
                out[name] = str(p.local) if p.local else p.uri
            else:
                out[name] = template
    return out


def export_lines(settings: Mapping[str, str]) -> list[str]:
    """``export NAME=value`` lines, quoted for a POSIX shell."""
    return [f"export {name}={shlex.quote(value)}" for name, value in settings.items()]


def update_env_file(path: Path, settings: Mapping[str, str]) -> None:
    """Merge ``settings`` into a ``NAME=value`` file (shell-quoted), keeping other names in it.

    ``scripts/demo.sh`` reads this file, so pulled weights reach ``make demo`` without exports.
    """
    lines: list[str] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            name = line.split("=", 1)[0].removeprefix("export ").strip()
            if name not in settings:
                lines.append(line)
    lines.extend(f"{name}={shlex.quote(value)}" for name, value in settings.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
