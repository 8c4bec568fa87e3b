"""fetch_weights: checkpoints from a path or from the service's S3 store, verified, store closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ganfolk.runtime import models
from ganfolk.runtime.hashing import sha256_hex
from ganfolk.runtime.settings import Settings
from ganfolk.runtime.storage import IntegrityError, ObjectStore, open_store
from tests.fixtures.s3 import S3Server, unique_bucket_name

WEIGHTS = bytes(range(256)) * 64


@pytest.fixture
def s3_settings(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a service whose store is a fresh bucket; credentials only in the environment."""
    monkeypatch.setenv("GANFOLK_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("GANFOLK_S3_SECRET_KEY", s3_server.secret_key)
    monkeypatch.delenv("GANFOLK_S3_REGION", raising=False)
    url = f"s3://{unique_bucket_name('weights')}?endpoint={s3_server.endpoint}&secure=false"
    return Settings(store_url=url, state_dir=tmp_path / "state")


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[tuple[ObjectStore, list[bool]]]:
    """Every store fetch_weights opens, with a flag list that records its close() calls."""
    stores: list[tuple[ObjectStore, list[bool]]] = []

    def spy(url: Any, **options: Any) -> ObjectStore:
        store = open_store(url, **options)
        closes: list[bool] = []
        real_close = store.close

        def close() -> None:
            closes.append(True)
            real_close()

        store.close = close  # type: ignore[method-assign]
        stores.append((store, closes))
        return store

    monkeypatch.setattr(models, "open_store", spy)
    return stores


def test_fetch_weights_from_s3_closes_the_store(
    s3_settings: Settings, opened: list[tuple[ObjectStore, list[bool]]]
) -> None:
    with open_store(s3_settings.store_url) as store:
        info = store.put("weights/g.pt", WEIGHTS)
    path = models.fetch_weights(info.uri, s3_settings, sha256=sha256_hex(WEIGHTS))
    assert path == s3_settings.state_dir / "weights" / "weights" / "g.pt"
    assert path.read_bytes() == WEIGHTS
    assert len(opened) == 1 and opened[0][1] == [True]
    # a second call finds the verified copy and downloads nothing, but still closes what it opened
    models.fetch_weights(info.uri, s3_settings, sha256=sha256_hex(WEIGHTS))
    assert [closes for _, closes in opened] == [[True], [True]]


def test_fetch_weights_closes_the_store_when_verification_fails(
    s3_settings: Settings, opened: list[tuple[ObjectStore, list[bool]]]
) -> None:
    with open_store(s3_settings.store_url) as store:
        info = store.put("weights/g.pt", WEIGHTS)
    with pytest.raises(IntegrityError):
        models.fetch_weights(info.uri, s3_settings, sha256="0" * 64)
    assert [closes for _, closes in opened] == [[True]]
    assert not (s3_settings.state_dir / "weights" / "weights" / "g.pt").exists()


def test_fetch_weights_local_path_is_verified(tmp_path: Path, opened: list[Any]) -> None:
    path = tmp_path / "g.pt"
    path.write_bytes(WEIGHTS)
    settings = Settings(state_dir=tmp_path / "state")
    assert models.fetch_weights(f"file://{path}", settings, sha256=sha256_hex(WEIGHTS).upper()) == path
    with pytest.raises(ValueError, match="GANFOLK_X_CHECKPOINT"):
        models.fetch_weights(str(path), settings, sha256="0" * 64, variable="GANFOLK_X_CHECKPOINT")
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        models.fetch_weights(str(tmp_path / "nope.pt"), settings)
    assert opened == []  # no store is opened for a local file
