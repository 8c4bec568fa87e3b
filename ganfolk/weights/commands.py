"""The ``ganfolk models list`` and ``ganfolk models pull`` commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ganfolk.runtime.storage import open_store
from ganfolk.weights.download import DownloadError
from ganfolk.weights.manifest import ModelEntry, load_manifest
from ganfolk.weights.pull import PullOptions, export_lines, pull_entry, select, settings_for, update_env_file

__all__ = ["ENV_FILE", "describe", "list_models", "pull_models", "state_dir_of", "store_url_of"]

# Written into the state directory; scripts/demo.sh exports what it holds.
ENV_FILE = "models.env"


def state_dir_of(state_dir: str | None) -> Path:
    """The local stack's state directory (the same rule ``ganfolk up`` follows)."""
    return Path(state_dir or os.environ.get("GANFOLK_STATE_DIR", ".state")).resolve()


def store_url_of(store_url: str | None, state: Path) -> str:
    """``--store-url``, else GANFOLK_STORE_URL, else the local stack's file store."""
    return store_url or os.environ.get("GANFOLK_STORE_URL") or str(state / "objects")


def _size(entry: ModelEntry) -> str:
    exact = [f.size for f in entry.files if f.size]
    approx = [f.approx_mb for f in entry.files if not f.size and f.approx_mb]
    mb = sum(exact) / 1e6 + sum(a for a in approx if a)
    if not mb:
        return "?"
    return f"{'~' if approx else ''}{mb:,.0f} MB"


def describe(entries: dict[str, ModelEntry]) -> str:
    """A table of the manifest: name, service, size, licence, source and settings."""
    lines = []
    for e in entries.values():
        lines.append(f"{e.name}  [{e.service}]  {_size(e)}  licence: {e.licence}")
        if e.description:
            lines.append(f"    {e.description}")
        for f in e.files:
            pin = "sha256 pinned" if f.sha256 else ("md5 pinned" if f.md5 else "no published digest")
            lines.append(f"    {f.file}  <- {f.source}  ({pin})")
        lines.append(f"    fills: {', '.join(e.setting_names())}")
    return "\n".join(lines)


def list_models(manifest: str | None = None) -> int:
    """Print the manifest; reaches no host."""
    print(describe(load_manifest(manifest)))
    return 0


def pull_models(
    names: Sequence[str],
    *,
    manifest: str | None = None,
    store_url: str | None = None,
    state_dir: str | None = None,
    timeout: float = 30.0,
    attempts: int = 5,
    retry_wait: float = 1.0,
    progress: bool = True,
    force: bool = False,
) -> int:
    """Pull the named models (all when none are named) into the store and print their settings.

    ``export`` lines go to stdout (``eval "$(ganfolk models pull)"`` applies them) and into
    ``<state dir>/models.env``, which ``make demo`` reads; progress and notes go to stderr.
    Returns 0 when every model arrived, 1 when any failed (the others are still stored).
    """
    entries = select(load_manifest(manifest), names)
    state = state_dir_of(state_dir)
    url = store_url_of(store_url, state)
    options = PullOptions(
        cache_dir=state / "downloads",
        timeout=timeout,
        attempts=attempts,
        retry_wait=retry_wait,
        progress=progress,
        force=force,
    )
    filled: dict[str, str] = {}
    failed: list[str] = []
    # open_store takes S3 credentials from the URL or GANFOLK_S3_* itself.
    with open_store(url) as store:
        for entry in entries:
            print(f"== {entry.name} ({entry.licence})", file=sys.stderr)
            try:
                pulled = pull_entry(entry, store, options)
            except DownloadError as exc:
                print(f"ganfolk models pull: {entry.name}: {exc}", file=sys.stderr)
                failed.append(entry.name)
                continue
            values = settings_for(entry, pulled)
            filled.update(values)
            print(f"# {entry.name}: {entry.licence}")
            for line in export_lines(values):
                print(line)
    if filled:
        env_file = state / ENV_FILE
        update_env_file(env_file, filled)
        print(f"settings written to {env_file} (make demo reads it)", file=sys.stderr)
    if failed:
        print(f"ganfolk models pull: failed: {', '.join(failed)} (run again to resume)", file=sys.stderr)
        return 1
    return 0
