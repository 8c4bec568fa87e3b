"""Publishing images and metadata where marketplaces can fetch them.

Three publishers (``GANFOLK_MINT_PUBLISHER``):

* ``store``: the object store; URIs are ``<GANFOLK_MINT_PUBLIC_BASE_URL><key>`` (an HTTPS
  CDN in front of the bucket) or, without a base, the store's own URIs (local use only).
* ``s3-ipfs``: an S3-compatible IPFS pinning bucket. Such providers add every object to
  IPFS and return its CID in the object's metadata; we compute the CID ourselves first
  and refuse a mismatch, so the tokenURI never depends on the provider's word.
* ``pinning-service``: the IPFS Pinning Service API. The provider fetches the bytes from
  the peers named in ``GANFOLK_MINT_PINNING_ORIGINS`` (or already holds them); we ask it to
  pin our CID and wait until it reports ``pinned``.

Whichever publishes, a copy stays in the object store (keyed by sha256, or by CID for the
IPFS publishers) so that GetToken can read the metadata back without a gateway.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass
from typing import Any

import requests

from ganfolk.runtime.errors import FailedPrecondition, Transient
from ganfolk.runtime.settings import ConfigError
from ganfolk.runtime.storage import ObjectNotFound, ObjectStore, open_store, sha256_hex
from ganfolk.runtime.storage.interface import StorageError
from services.mint.config import MintSettings
from services.mint.ipfs import cid_v0_to_v1, ipfs_cid, is_cid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    uri: str  # tokenURI / "image": ipfs://<cid> or a URL
    cid: str  # CIDv1 base32; "" when not on IPFS
    key: str  # the object-store copy


class Publisher(abc.ABC):
    """Puts bytes where marketplaces fetch them; returns their public URI."""

    def __init__(self, settings: MintSettings) -> None:
        self.settings = settings
        self.prefix = settings.mint_prefix.strip("/")

    @abc.abstractmethod
    def publish(self, store: ObjectStore, kind: str, data: bytes, content_type: str, ext: str) -> Published:
        """Publish ``data`` (``kind`` is "images" or "metadata"); idempotent for the same bytes."""

    def uri_for(self, store: ObjectStore, kind: str, data: bytes, ext: str) -> str:
        """The URI :meth:`publish` would give ``data``, without publishing it (for dry runs)."""
        return f"ipfs://{ipfs_cid(data)}"

    def store_key(self, store: ObjectStore, uri: str) -> str | None:
        """The object-store key of the copy of a published URI, or None."""
        if uri.startswith("ipfs://"):
            cid = uri.removeprefix("ipfs://").split("/", 1)[0]
            return f"{self.prefix}/ipfs/{cid}"
        base = self.settings.mint_public_base_url.rstrip("/")
        if base and uri.startswith(base + "/"):
            return uri[len(base) + 1 :]
        try:
            return store.key_from_uri(uri)
        except ValueError:
            return None


class StorePublisher(Publisher):
    """The object store, at its public base URL (HTTPS) or its own URIs."""

    def publish(self, store: ObjectStore, kind: str, data: bytes, content_type: str, ext: str) -> Published:
        key = f"{self.prefix}/{kind}/{sha256_hex(data)}.{ext}"
        store.put(key, data, content_type=content_type)
        return Published(self._url(store, key), "", key)

    def uri_for(self, store: ObjectStore, kind: str, data: bytes, ext: str) -> str:
        return self._url(store, f"{self.prefix}/{kind}/{sha256_hex(data)}.{ext}")

    def _url(self, store: ObjectStore, key: str) -> str:
        base = self.settings.mint_public_base_url
        return f"{base.rstrip('/')}/{key}" if base else store.uri(key)


class S3IpfsPublisher(Publisher):
    """An S3-compatible IPFS pinning bucket whose provider reports each object's CID."""

    def __init__(self, settings: MintSettings) -> None:
        super().__init__(settings)
        if not settings.mint_ipfs_s3_url:
            raise ConfigError("GANFOLK_MINT_IPFS_S3_URL is required with GANFOLK_MINT_PUBLISHER=s3-ipfs")
        secret = settings.mint_ipfs_s3_secret_key
        try:
            self.bucket = open_store(
                settings.mint_ipfs_s3_url,
                access_key=settings.mint_ipfs_s3_access_key or None,
                secret_key=secret.get_secret_value() if secret else None,
                create_bucket=False,
            )
        except ValueError as exc:
            raise ConfigError(f"GANFOLK_MINT_IPFS_S3_URL: {exc}") from None

    def publish(self, store: ObjectStore, kind: str, data: bytes, content_type: str, ext: str) -> Published:
        cid = ipfs_cid(data)
        # Named by our CID: a second publish of the same bytes overwrites the same object.
        key = f"{self.prefix}/{kind}/{cid}.{ext}"
        try:
            self.bucket.put(key, data, content_type=content_type)
            info = self.bucket.stat(key)
        except StorageError as exc:
            raise Transient(f"the IPFS pinning bucket failed: {exc}") from None
        theirs = info.metadata.get(self.settings.mint_ipfs_s3_cid_key, "").strip()
        if not theirs:
            raise Transient(
                f"the IPFS pinning bucket returned no '{self.settings.mint_ipfs_s3_cid_key}' metadata for "
                f"{key} (yet); check GANFOLK_MINT_IPFS_S3_CID_KEY and that the bucket is an IPFS one"
            )
        normalised = cid_v0_to_v1(theirs) if theirs.startswith("Qm") and is_cid(theirs) else theirs
        if normalised != cid:
            raise FailedPrecondition(
                f"the IPFS provider's CID {theirs} for {key} differs from ours ({cid}): it builds its DAG "
                "differently (e.g. raw leaves or another chunk size); configure it for ipfs add's defaults"
            )
        copy = f"{self.prefix}/ipfs/{cid}"
        store.put(copy, data, content_type=content_type)
        return Published(f"ipfs://{cid}", cid, copy)


class PinningServicePublisher(Publisher):
    """The IPFS Pinning Service API (https://ipfs.github.io/pinning-services-api-spec/)."""

    def __init__(self, settings: MintSettings) -> None:
        super().__init__(settings)
        if not settings.mint_pinning_endpoint or settings.mint_pinning_token is None:
            raise ConfigError(
                "GANFOLK_MINT_PINNING_ENDPOINT and GANFOLK_MINT_PINNING_TOKEN are required with "
                "GANFOLK_MINT_PUBLISHER=pinning-service"
            )
        self.endpoint = settings.mint_pinning_endpoint.rstrip("/")
        self.origins = [o.strip() for o in settings.mint_pinning_origins.split(",") if o.strip()]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {settings.mint_pinning_token.get_secret_value()}"

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            resp = self.session.request(
                method, self.endpoint + path, timeout=self.settings.mint_pinning_timeout_s, **kw
            )
        except requests.RequestException as exc:
            raise Transient(f"the pinning service is unreachable ({type(exc).__name__})") from None
        if resp.status_code in (401, 403):
            raise FailedPrecondition(f"the pinning service refused our token (HTTP {resp.status_code})")
        if resp.status_code == 429 or resp.status_code >= 500:
            raise Transient(f"the pinning service answered HTTP {resp.status_code}; retry later")
        if resp.status_code >= 400:
            raise FailedPrecondition(
                f"the pinning service answered HTTP {resp.status_code}: {resp.text[:200]}"
            )
        body: dict[str, Any] = resp.json()
        return body

    def publish(self, store: ObjectStore, kind: str, data: bytes, content_type: str, ext: str) -> Published:
        cid = ipfs_cid(data)
        copy = f"{self.prefix}/ipfs/{cid}"
        # The copy the provider's origins serve (and GetToken reads).
        store.put(copy, data, content_type=content_type)
        existing = self._call("GET", "/pins", params={"cid": cid, "status": "queued,pinning,pinned"})
        results = existing.get("results") or []
        if results:
            status = results[0]
        else:
            pin: dict[str, Any] = {"cid": cid, "name": f"ganfolk-{kind}-{cid[-12:]}.{ext}"}
            if self.origins:
                pin["origins"] = self.origins
            status = self._call("POST", "/pins", json=pin)
        self._wait(status, cid)
        return Published(f"ipfs://{cid}", cid, copy)

    def _wait(self, status: dict[str, Any], cid: str) -> None:
        deadline = time.monotonic() + self.settings.mint_pinning_wait_s
        delay = 0.2
        while True:
            state = str(status.get("status", ""))
            pinned_cid = str((status.get("pin") or {}).get("cid", cid))
            if pinned_cid != cid:
                raise FailedPrecondition(f"the pinning service pinned {pinned_cid}, not {cid}")
            if state == "pinned":
                return
            if state == "failed":
                raise FailedPrecondition(
                    f"the pinning service failed to pin {cid}: it could not fetch the bytes "
                    "(check GANFOLK_MINT_PINNING_ORIGINS)"
                )
            if time.monotonic() >= deadline:
                raise Transient(
                    f"{cid} is still '{state}' at the pinning service after "
                    f"{self.settings.mint_pinning_wait_s:g}s; the mint is retried later"
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            status = self._call("GET", f"/pins/{status['requestid']}")


def make_publisher(settings: MintSettings) -> Publisher:
    """The publisher ``GANFOLK_MINT_PUBLISHER`` names."""
    if settings.mint_publisher == "s3-ipfs":
        return S3IpfsPublisher(settings)
    if settings.mint_publisher == "pinning-service":
        return PinningServicePublisher(settings)
    return StorePublisher(settings)


def read_published(publisher: Publisher, store: ObjectStore, uri: str) -> bytes | None:
    """The bytes of a published URI from the store's copy, or None when there is none."""
    key = publisher.store_key(store, uri)
    if key is None:
        return None
    try:
        return store.get(key)
    except (ObjectNotFound, ValueError):
        return None
