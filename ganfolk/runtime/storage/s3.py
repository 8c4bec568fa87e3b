"""The S3 store: objects in one bucket of an S3-API server (MinIO, AWS S3) via the ``minio`` SDK."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from ganfolk.runtime.hashing import CHUNK_BYTES, hash_file, sha256_hex
from ganfolk.runtime.storage.atomic import atomic_write_chunks
from ganfolk.runtime.storage.interface import (
    DEFAULT_CONTENT_TYPE,
    SHA256_META_KEY,
    BytesLike,
    IntegrityError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StrPath,
    check_sha256,
    parse_uri,
    validate_content_type,
    validate_key,
    validate_metadata,
    validate_prefix,
)

__all__ = ["S3Store"]

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NotFound"})


class S3Store(ObjectStore):
    """Objects in one bucket of an S3-API server (MinIO) through the ``minio`` SDK.

    ``endpoint`` is ``host:port`` (no scheme).  The bucket is created if missing
    (:meth:`ensure_bucket`, idempotent and safe against concurrent creators) unless
    ``create_bucket=False``.  The sha256 is stored as user metadata
    ``x-amz-meta-sha256``; URIs are ``s3://bucket/key`` (they do not name the
    endpoint).  :meth:`list` issues one ``HEAD`` per object to report hashes.
    Requests time out after ``connect_timeout``/``read_timeout`` seconds and are
    retried (5 times, with back-off) on 5xx answers; pass ``http_client`` (a
    ``urllib3.PoolManager``) to change that.

    Presigned URLs are signed for ``endpoint`` as this client sees it: a URL
    minted against an in-cluster host name only works where that name resolves.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
        *,
        create_bucket: bool = True,
        http_client: Any = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
    ) -> None:
        from minio import Minio  # local import: LocalStore users need not have minio

        if "://" in endpoint or "/" in endpoint:
            raise ValueError(f"endpoint must be host:port without scheme or path: {endpoint!r}")
        self.endpoint = endpoint
        self.bucket = bucket
        self.secure = secure
        self.region = region
        self._owns_http = http_client is None
        if http_client is None:
            # The SDK's default waits 5 minutes to connect; a service should fail faster.
            import certifi
            import urllib3

            http_client = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                maxsize=16,
                cert_reqs="CERT_REQUIRED",
                ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
                retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http_client,
        )
        from minio.helpers import check_bucket_name

        check_bucket_name(bucket, strict=True)
        if create_bucket:
            self.ensure_bucket()

    def __repr__(self) -> str:  # never show credentials
        scheme = "https" if self.secure else "http"
        return f"S3Store({scheme}://{self.endpoint}/{self.bucket})"

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        from minio.error import MinioException, S3Error
        from urllib3.exceptions import HTTPError

        try:
            yield
        except S3Error as exc:
            if key is not None and exc.code in _NOT_FOUND_CODES:
                raise ObjectNotFound(key) from None
            if exc.code == "NoSuchBucket":
                raise StorageError(f"bucket {self.bucket!r} does not exist on {self.endpoint}") from exc
            raise StorageError(f"S3 error on {self!r} key={key!r}: {exc.code}: {exc.message}") from exc
        except (MinioException, HTTPError) as exc:
            raise StorageError(f"S3 request to {self!r} failed (key={key!r}): {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent)."""
        from minio.error import S3Error

        with self._errors():
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket, location=self.region)
            except S3Error as exc:
                if exc.code == "BucketAlreadyOwnedByYou":
                    return
                if exc.code == "BucketAlreadyExists" and self.client.bucket_exists(self.bucket):
                    return
                raise

    def close(self) -> None:
        if self._owns_http:
            http = getattr(self.client, "_http", None)
            if http is not None:
                http.clear()

    # -- naming ---------------------------------------------------------------

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{validate_key(key)}"

    def key_from_uri(self, uri: str) -> str:
        scheme, bucket, key = parse_uri(uri)
        if scheme != "s3" or bucket != self.bucket:
            raise ValueError(f"URI does not belong to bucket {self.bucket!r}: {uri!r}")
        return key

    # -- helpers --------------------------------------------------------------

    def _info_from_headers(self, key: str, headers: Any, size: int | None = None) -> ObjectInfo:
        user: dict[str, str] = {}
        sha: str | None = None
        content_type = DEFAULT_CONTENT_TYPE
        length = size
        for name, value in headers.items():
            lname = name.lower()
            if lname.startswith("x-amz-meta-"):
                mkey = lname[len("x-amz-meta-") :]
                if mkey == SHA256_META_KEY:
                    sha = value.strip().lower()
                else:
                    user[mkey] = value
            elif lname == "content-type":
                content_type = value
            elif lname == "content-length" and length is None:
                length = int(value)
        return ObjectInfo(key, self.uri(key), length or 0, sha, content_type, user)

    def _put_stream(
        self,
        key: str,
        stream: BinaryIO,
        size: int,
        digest: str,
        content_type: str,
        metadata: dict[str, str],
    ) -> ObjectInfo:
        with self._errors(key):
            self.client.put_object(
                self.bucket,
                key,
                stream,
                size,
                content_type=content_type,
                metadata={**metadata, SHA256_META_KEY: digest},
            )
        return ObjectInfo(key, self.uri(key), size, digest, content_type, metadata)

    # -- operations -----------------------------------------------------------

    def put(
        self,
        key: str,
        data: BytesLike,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        validate_key(key)
        content_type = validate_content_type(content_type)
        meta = validate_metadata(metadata)
        payload = bytes(data)
        digest = sha256_hex(payload)
        return self._put_stream(key, io.BytesIO(payload), len(payload), digest, content_type, meta)

    def put_file(
        self,
        key: str,
        path: StrPath,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Stream a file up (two passes: hash, then upload; memory stays bounded)."""
        validate_key(key)
        content_type = validate_content_type(content_type)
        meta = validate_metadata(metadata)
        size, digests = hash_file(path)
        digest = digests["sha256"]
        with open(path, "rb") as f:
            return self._put_stream(key, f, size, digest, content_type, meta)

    def _open(self, key: str) -> Any:
        with self._errors(key):
            return self.client.get_object(self.bucket, key)

    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        validate_key(key)
        expected = check_sha256(expected_sha256) if expected_sha256 is not None else None
        resp = self._open(key)
        try:
            with self._errors(key):
                data: bytes = resp.read()
            info = self._info_from_headers(key, resp.headers, len(data))
        finally:
            resp.close()
            resp.release_conn()
        want = expected if expected is not None else info.sha256
        actual = sha256_hex(data)
        if want is not None and actual != want:
            raise IntegrityError(key, want, actual)
        return data

    def get_file(self, key: str, path: StrPath, expected_sha256: str | None = None) -> ObjectInfo:
        """Stream the object into ``path`` (atomic, verified before the rename)."""
        validate_key(key)
        expected = check_sha256(expected_sha256) if expected_sha256 is not None else None
        resp = self._open(key)
        try:
            info = self._info_from_headers(key, resp.headers)
            want = expected if expected is not None else info.sha256
            with self._errors(key):
                size, digest = atomic_write_chunks(
                    Path(path), resp.stream(CHUNK_BYTES), fsync=False, verify=(key, want)
                )
        finally:
            resp.close()
            resp.release_conn()
        return ObjectInfo(key, info.uri, size, digest, info.content_type, info.metadata)

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        with self._errors(key):
            obj = self.client.stat_object(self.bucket, key)
        return self._info_from_headers(key, obj.metadata or {}, obj.size)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._errors():
            names = [
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
                if o.object_name is not None and not o.is_dir
            ]
        names.sort(key=lambda k: k.encode("utf-8"))
        for name in names:
            try:
                validate_key(name)
                yield self.stat(name)
            except (ObjectNotFound, ValueError):
                continue  # deleted meanwhile, or a foreign key this module cannot address

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._errors(key):
            self.client.remove_object(self.bucket, key)

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A presigned ``GET`` URL (1 second to 7 days); does not check that the object exists."""
        validate_key(key)
        with self._errors(key):
            return self.client.presigned_get_object(self.bucket, key, expires=expires)
