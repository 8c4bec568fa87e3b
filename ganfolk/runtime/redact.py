"""Secrets kept out of logs, error messages and job records.

Two layers, because neither alone is enough:

- :func:`redact_url` hides what a URL can carry by its shape: ``user:password@`` and the
  values of query parameters named like credentials (``api_key=``, ``token=``,
  ``X-Amz-Signature=``). It needs no configuration, so it also covers URLs this process
  never configured (a presigned URL in an error, a peer's address).
- a registry of the secret values this process was configured with (every ``SecretStr``
  setting, the password and credential parameters inside URL settings, the S3 keys
  :func:`~ganfolk.runtime.storage.open_store` resolves). :func:`redact` replaces each of
  them wherever it appears, whatever the shape: a key echoed back inside an HTTP library's
  exception, an environment dump. The JSON log formatter runs every line through it.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from typing import Any

from pydantic import SecretStr

MASK = "***"
# Shorter values are not registered: masking every "abc" in every log line would hide more
# than it protects, and no real key is that short.
MIN_SECRET_CHARS = 6
# Query parameters whose values are credentials (case-insensitive substring match).
_SECRET_PARAM = re.compile(r"key|token|secret|pass|pwd|auth|sig|credential|session", re.IGNORECASE)
# scheme://userinfo@ anywhere in a text; userinfo stops at the first character a host part
# cannot be preceded by.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s'\"<>]*)@")
# name=value in a query string, for names that look like credentials.
_PARAM = re.compile(r"(?P<sep>[?&;])(?P<name>[^=&#\s'\"<>]+)=(?P<value>[^&#\s'\"<>]*)")

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def redact_url(url: str) -> str:
    """``url`` (or a text holding URLs) with ``user:password@`` and credential query values
    replaced by ``***``; host, port, path and other parameters stay, for the reader."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", url)
    return _PARAM.sub(_mask_param, text) if "=" in text else text


def _mask_param(m: re.Match[str]) -> str:
    if not _SECRET_PARAM.search(m["name"]) or not m["value"]:
        return m.group(0)
    return f"{m['sep']}{m['name']}={MASK}"


def register(value: str | SecretStr | None) -> None:
    """Remember a secret value: :func:`redact` masks it from now on, in this process."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not value:
        return
    forms = {value.strip(), urllib.parse.quote(value.strip(), safe="")}
    global _pattern
    with _lock:
        fresh = {f for f in forms if len(f) >= MIN_SECRET_CHARS} - _secrets
        if fresh:
            _secrets.update(fresh)
            # Longest first, so that a secret containing another is masked whole.
            ordered = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(map(re.escape, ordered)))


def register_url(url: str) -> None:
    """Remember the secrets a URL carries: its password and credential query values."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed port: still look for the credentials by shape
        parts, password = None, None
    if password:
        register(urllib.parse.unquote(password))
        register(password)
    query = parts.query if parts is not None else url.partition("?")[2]
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=False):
        if _SECRET_PARAM.search(name):
            register(value)


def register_settings(settings: Any) -> None:
    """Remember every secret of a settings object: ``SecretStr`` fields, and credentials
    inside URL-valued fields (a store URL with keys, an LLM base URL with a key)."""
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            register(value)
        elif isinstance(value, str) and "://" in value:
            register_url(value)


def redact(text: str) -> str:
    """``text`` with every registered secret and every URL credential replaced by ``***``."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text or "=" in text:
        text = redact_url(text)
    return text


def shown(value: Any, name: str = "", limit: int = 80) -> str:
    """How a rejected input may appear in an error message: redacted and shortened; the value
    of a field named like a credential, or a whole mapping (a model-level error's input:
    every setting), is not shown at all."""
    if isinstance(value, dict | list | tuple | set):
        return "a collection of values"
    # A key file's path is what to fix and no secret; the key itself is.
    if isinstance(value, SecretStr) or (_SECRET_PARAM.search(name) and not name.endswith(("_file", "_dir"))):
        return MASK
    text = redact(str(value))
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)
