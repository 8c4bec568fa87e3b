"""Settings of the gallery (GANFOLK_GALLERY_*)."""

from __future__ import annotations

from pydantic import SecretStr

from ganfolk.runtime.settings import Settings


class GallerySettings(Settings):
    # The web app: its own port beside the gRPC one (health, reflection, GetInfo).
    gallery_http_host: str = "127.0.0.1"
    gallery_http_port: int = 8071
    # The coordinator's jobs API (host:port); empty: the catalog's port on this host.
    gallery_coordinator: str = ""
    # PEM CA bundle for a coordinator that serves TLS; unset: plaintext gRPC.
    gallery_coordinator_ca_file: str | None = None
    # The token reviewers sign in with (required). The gallery passes the signed-in
    # reviewer's token on to the coordinator as its bearer token, so where the coordinator
    # requires one (GANFOLK_COORDINATOR_AUTH_TOKEN) set both from the same secret.
    gallery_auth_token: SecretStr | None = None
    # Signs the session cookie; unset: a random key per process (sign-ins end at a restart,
    # and replicas behind one address need the same key).
    gallery_session_secret: SecretStr | None = None
    gallery_session_max_age_s: int = 12 * 3600
    # Send cookies over HTTPS only (set behind a TLS-terminating ingress).
    gallery_secure_cookies: bool = False
    # Thumbnails are cached in memory by content hash up to this size.
    gallery_thumbnail_cache_mb: int = 64
    # Largest CSV a reviewer may upload (re-imported names and backstories).
    gallery_max_upload_kb: int = 1024
    # Seconds one call to the coordinator may take (Watch streams excepted).
    gallery_rpc_timeout_s: float = 30.0
