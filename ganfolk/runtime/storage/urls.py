"""``open_store``: a store from its URL -- the one place that knows about S3 credentials.

Credentials
-----------
Callers pass only the URL (``GANFOLK_STORE_URL``); :func:`open_store` finds what an
S3 store needs itself, each value from the first of these that has it:

1. a keyword argument (``access_key=``, ``secret_key=``, ``region=``) -- for tests
   and tools that hold credentials of their own;
2. the URL: ``s3://KEY:SECRET@bucket?...`` or ``http://KEY:SECRET@host:port/bucket``
   (percent-decoded), and ``region=`` in the query;
3. the environment: ``GANFOLK_S3_ACCESS_KEY``, ``GANFOLK_S3_SECRET_KEY``,
   ``GANFOLK_S3_REGION``.

A missing access or secret key is a :class:`~ganfolk.runtime.settings.ConfigError`
naming the variable to set.  Local stores need no credentials and ignore them, so one
deployment can switch stores by changing the URL alone.

Region
------
The region is optional.  When it is known it goes to the S3 client, which then signs
every request for it and creates a missing bucket there; when it is not, the client
asks the server for the bucket's region once (one extra request) and creates buckets
in the server's default region.  Set it for AWS S3 buckets outside ``us-east-1`` or
for MinIO deployments configured with a region; plain MinIO needs none.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ganfolk.runtime import redact
from ganfolk.runtime.settings import ConfigError
from ganfolk.runtime.storage.interface import ObjectStore
from ganfolk.runtime.storage.local import LocalStore
from ganfolk.runtime.storage.s3 import S3Store

__all__ = ["ACCESS_KEY_VAR", "REGION_VAR", "SECRET_KEY_VAR", "open_store", "redact_url"]

ACCESS_KEY_VAR = "GANFOLK_S3_ACCESS_KEY"
SECRET_KEY_VAR = "GANFOLK_S3_SECRET_KEY"
REGION_VAR = "GANFOLK_S3_REGION"

_S3_KWARGS = ("access_key", "secret_key", "region", "secure", "create_bucket", "http_client")


def _parse_bool(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` and credential parameters replaced, safe for logs
    and error messages (see :mod:`ganfolk.runtime.redact`)."""
    return redact.redact_url(url)


def _from_env(environ: Mapping[str, str], variable: str) -> str | None:
    value = environ.get(variable, "").strip()
    return value or None


def open_store(url: str | os.PathLike[str], **options: Any) -> ObjectStore:
    """Open the store named by ``url``.

    * ``file:///abs/dir``, ``file://localhost/abs/dir`` or a plain path -> :class:`LocalStore`
      (S3-only keyword arguments such as credentials are ignored, so one configuration
      can switch between stores; ``fsync=`` is passed through).
    * ``s3://[ACCESS:SECRET@]bucket[?endpoint=host:port&secure=false&region=r]`` ->
      :class:`S3Store`; ``endpoint`` defaults to ``s3.amazonaws.com`` and ``secure``
      to true.
    * ``http://[ACCESS:SECRET@]host:port/bucket`` (``https`` for TLS) -> :class:`S3Store`.

    Credentials and region come from keyword arguments, the URL, or ``GANFOLK_S3_*``
    (see the module docstring); a missing key raises
    :class:`~ganfolk.runtime.settings.ConfigError`.  Keyword arguments ``secure``,
    ``create_bucket`` and ``http_client`` override what the URL says.  Unknown keyword
    arguments raise ``TypeError``; unknown query parameters or malformed URLs raise
    ``ValueError``.
    """
    url = os.fspath(url)
    if not isinstance(url, str) or not url:
        raise ValueError("store URL must be a non-empty string")
    unknown = set(options) - set(_S3_KWARGS) - {"fsync"}
    if unknown:
        raise TypeError(f"open_store() got unexpected keyword arguments: {sorted(unknown)}")

    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower() if sep else ""
    local_opts = {k: v for k, v in options.items() if k == "fsync"}
    if not sep:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", url):
            raise ValueError(f"store URL looks like a URL but is not scheme://...: {redact_url(url)!r}")
        return LocalStore(Path(url), **local_opts)
    if scheme == "file":
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise ValueError(f"file store URL must be file:///absolute/path: {redact_url(url)!r}")
        path = urllib.parse.unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"file store URL must be file:///absolute/path: {redact_url(url)!r}")
        return LocalStore(Path(path), **local_opts)
    if "fsync" in options:
        raise TypeError("fsync= only applies to file stores")
    return _open_s3(url, scheme, options)


def _open_s3(url: str, scheme: str, options: Mapping[str, Any]) -> S3Store:
    shown = redact_url(url)
    parts = urllib.parse.urlsplit(url)
    if parts.fragment:
        raise ValueError(f"store URL must not have a fragment: {shown!r}")
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    opts: dict[str, Any] = {}
    if scheme == "s3":
        bucket = parts.netloc.rpartition("@")[2]  # not .hostname: that lower-cases
        if parts.port is not None or parts.path not in ("", "/"):
            raise ValueError(f"s3 store URL is s3://bucket?endpoint=host:port: {shown!r}")
        endpoint = query.pop("endpoint", "s3.amazonaws.com")
        opts["secure"] = _parse_bool(query.pop("secure"), "secure") if "secure" in query else True
    elif scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"store URL needs a host: {shown!r}")
        host = parts.hostname
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        endpoint = f"{host}:{parts.port}" if parts.port else host
        bucket = parts.path.strip("/")
        if not bucket or "/" in bucket:
            raise ValueError(f"store URL must be {scheme}://host:port/bucket: {shown!r}")
        opts["secure"] = scheme == "https"
        if "secure" in query:
            raise ValueError("secure= is implied by http/https; do not pass it in the query")
    else:
        raise ValueError(f"unsupported store URL scheme {scheme!r}")
    url_region = query.pop("region", None)
    if query:
        raise ValueError(f"unknown store URL parameters: {sorted(query)}")
    if not endpoint:
        raise ValueError(f"empty endpoint in store URL: {shown!r}")

    environ = os.environ
    url_access = urllib.parse.unquote(parts.username) if parts.username else None
    url_secret = urllib.parse.unquote(parts.password) if parts.password else None

    def credential(keyword: str, from_url: str | None, variable: str) -> str:
        value = options.get(keyword) or from_url or _from_env(environ, variable)
        if not value:
            raise ConfigError(
                f"{variable} is required: the object store is {shown} "
                "(or give the credentials in the URL: s3://ACCESS:SECRET@bucket?endpoint=host:port)"
            )
        return str(value)

    access_key = credential("access_key", url_access, ACCESS_KEY_VAR)
    secret_key = credential("secret_key", url_secret, SECRET_KEY_VAR)
    # Whichever source it came from, the key is masked in this process's logs from now on.
    redact.register(secret_key)
    if "region" in options:
        opts["region"] = options["region"] or None
    elif url_region is not None:
        opts["region"] = url_region or None
    else:
        opts["region"] = _from_env(environ, REGION_VAR)
    opts.update({k: v for k, v in options.items() if k in ("secure", "create_bucket", "http_client")})
    return S3Store(endpoint, access_key, secret_key, bucket, **opts)
