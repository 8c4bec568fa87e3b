"""The weights manifest: which public checkpoints exist, where they come from, what they fill.

The shipped manifest is ``ganfolk/weights/models.toml``; ``ganfolk models pull --manifest``
reads another one in the same format (a mirror, or the tests' loopback server).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ganfolk.runtime.catalog import SERVICES

__all__ = ["ManifestError", "ModelEntry", "ModelFile", "load_manifest", "shipped_manifest_text"]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SETTING_RE = re.compile(r"^GANFOLK_[A-Z0-9_]+$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_OPEN_CLIP_RE = re.compile(r"^[^:\s]+:[^:\s]+$")
# Placeholders a setting's value may be; anything else is a literal value.
TEMPLATES = ("{uri}", "{sha256}", "{local}")
DECOMPRESSORS = ("bz2",)


class ManifestError(ValueError):
    """The manifest is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class ModelFile:
    """One stored file of a model and the settings it fills."""

    file: str
    settings: dict[str, str]
    url: str = ""
    # "<architecture>:<tag>" fetched through open_clip's pretrained mechanism instead of ``url``.
    open_clip: str = ""
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    approx_mb: float | None = None
    decompress: str | None = None

    @property
    def source(self) -> str:
        return f"open_clip:{self.open_clip}" if self.open_clip else self.url


@dataclass(frozen=True)
class ModelEntry:
    """One model of the manifest: a name to pull, its licence and its files."""

    name: str
    description: str
    service: str
    licence: str
    files: tuple[ModelFile, ...]
    # Literal settings the model needs besides its files (e.g. the matching architecture).
    settings: dict[str, str] = field(default_factory=dict)

    def setting_names(self) -> list[str]:
        names = list(self.settings)
        for f in self.files:
            names.extend(f.settings)
        return names


def _fail(where: str, message: str) -> ManifestError:
    return ManifestError(f"manifest {where}: {message}")


def _settings(raw: Any, where: str, *, templates: bool) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(where, "settings must be a table of GANFOLK_* = value")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not _SETTING_RE.match(key):
            raise _fail(where, f"setting {key!r} is not a GANFOLK_* variable name")
        if not isinstance(value, str) or not value:
            raise _fail(where, f"setting {key} needs a non-empty string value")
        if "{" in value and value not in TEMPLATES:
            raise _fail(where, f"setting {key}={value!r}: placeholders are exactly one of {TEMPLATES}")
        if not templates and value in TEMPLATES:
            raise _fail(where, f"setting {key}={value}: placeholders belong to a file's settings")
        out[key] = value
    return out


def _optional_str(raw: dict[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(where, f"{key} must be a non-empty string")
    return value


def _parse_file(raw: Any, where: str) -> ModelFile:
    if not isinstance(raw, dict):
        raise _fail(where, "each [[model.files]] must be a table")
    known = {"file", "url", "open_clip", "sha256", "md5", "size", "approx_mb", "decompress", "settings"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(where, f"unknown fields {unknown} (known: {sorted(known)})")
    name = raw.get("file")
    if not isinstance(name, str) or not _FILE_RE.match(name):
        raise _fail(where, f"file must be a plain file name (letters, digits, . _ -), got {name!r}")
    where = f"{where} ({name})"
    url = _optional_str(raw, "url", where) or ""
    open_clip = _optional_str(raw, "open_clip", where) or ""
    if bool(url) == bool(open_clip):
        raise _fail(where, "give exactly one of url or open_clip")
    if url and not url.startswith(("https://", "http://")):
        raise _fail(where, f"url must be http(s): {url!r}")
    if open_clip and not _OPEN_CLIP_RE.match(open_clip):
        raise _fail(where, f"open_clip must be '<architecture>:<tag>', got {open_clip!r}")
    sha256 = _optional_str(raw, "sha256", where)
    if sha256 is not None and not _SHA256_RE.match(sha256):
        raise _fail(where, f"sha256 must be 64 lower-case hex digits, got {sha256!r}")
    md5 = _optional_str(raw, "md5", where)
    if md5 is not None and not _MD5_RE.match(md5):
        raise _fail(where, f"md5 must be 32 lower-case hex digits, got {md5!r}")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise _fail(where, f"size must be a positive number of bytes, got {size!r}")
    approx = raw.get("approx_mb")
    if approx is not None and (
        isinstance(approx, bool) or not isinstance(approx, int | float) or approx <= 0
    ):
        raise _fail(where, f"approx_mb must be a positive number, got {approx!r}")
    decompress = _optional_str(raw, "decompress", where)
    if decompress is not None and decompress not in DECOMPRESSORS:
        raise _fail(where, f"decompress must be one of {DECOMPRESSORS}, got {decompress!r}")
    if decompress and open_clip:
        raise _fail(where, "decompress applies to url downloads only")
    settings = _settings(raw.get("settings"), where, templates=True)
    if not settings:
        raise _fail(where, "a file must fill at least one setting")
    return ModelFile(
        file=name,
        settings=settings,
        url=url,
        open_clip=open_clip,
        sha256=sha256,
        md5=md5,
        size=size,
        approx_mb=float(approx) if approx is not None else None,
        decompress=decompress,
    )


def _parse_entry(raw: Any, index: int) -> ModelEntry:
    where = f"[[model]] #{index + 1}"
    if not isinstance(raw, dict):
        raise _fail(where, "must be a table")
    known = {"name", "description", "service", "licence", "settings", "files"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(where, f"unknown fields {unknown} (known: {sorted(known)})")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _fail(where, f"name must be lower-case letters, digits, . and -, got {name!r}")
    where = f"model {name!r}"
    service = raw.get("service")
    if service not in SERVICES:
        raise _fail(where, f"service must be one of {sorted(SERVICES)}, got {service!r}")
    licence = raw.get("licence")
    if not isinstance(licence, str) or not licence.strip():
        raise _fail(where, "licence is required (what terms the weights come under)")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _fail(where, "description must be a string")
    files_raw = raw.get("files")
    if not isinstance(files_raw, list) or not files_raw:
        raise _fail(where, "needs at least one [[model.files]]")
    files = tuple(_parse_file(f, where) for f in files_raw)
    entry = ModelEntry(
        name=name,
        description=description,
        service=service,
        licence=licence.strip(),
        files=files,
        settings=_settings(raw.get("settings"), where, templates=False),
    )
    names = entry.setting_names()
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail(where, f"settings filled twice: {dupes}")
    return entry


def shipped_manifest_text() -> str:
    """The text of the manifest shipped with the package."""
    return resources.files("ganfolk.weights").joinpath("models.toml").read_text(encoding="utf-8")


def load_manifest(path: str | Path | None = None) -> dict[str, ModelEntry]:
    """Parse and validate a manifest (the shipped one when ``path`` is None), by model name.

    Raises :class:`ManifestError` naming the entry and field at fault, or ``FileNotFoundError``.
    """
    if path is None:
        text, origin = shipped_manifest_text(), "ganfolk/weights/models.toml"
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"manifest not found: {p}")
        text, origin = p.read_text(encoding="utf-8"), str(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"manifest {origin} is not valid TOML: {exc}") from None
    models = data.get("model")
    if not isinstance(models, list) or not models:
        raise ManifestError(f"manifest {origin} has no [[model]] entries")
    entries: dict[str, ModelEntry] = {}
    stored: dict[str, str] = {}
    for i, raw in enumerate(models):
        entry = _parse_entry(raw, i)
        if entry.name in entries:
            raise ManifestError(f"manifest {origin}: model {entry.name!r} is listed twice")
        for f in entry.files:
            if f.file in stored:
                raise ManifestError(
                    f"manifest {origin}: {entry.name!r} and {stored[f.file]!r} both store {f.file!r}"
                )
            stored[f.file] = entry.name
        entries[entry.name] = entry
    return entries
