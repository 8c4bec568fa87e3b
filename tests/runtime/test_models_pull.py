"""`ganfolk models pull` against a loopback HTTP server: resume, digests, errors, timeouts.

Every URL here is on 127.0.0.1, and an autouse fixture refuses any other connection, so no
test can reach a public host even if a manifest slipped through.
"""

from __future__ import annotations

import bz2
import hashlib
import importlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ganfolk.cli import main
from ganfolk.runtime.catalog import SERVICES
from ganfolk.runtime.settings import Settings
from ganfolk.runtime.storage import S3Store, open_store
from ganfolk.weights.commands import pull_models
from ganfolk.weights.download import ChecksumError, DownloadError, download
from ganfolk.weights.manifest import TEMPLATES, ManifestError, load_manifest
from ganfolk.weights.pull import PullOptions, pull_entry, update_env_file

# --------------------------------------------------------------------------- no public hosts


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every connection that is not to loopback, and keep the Hugging Face hub offline."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"a test tried to reach {address!r}")
        real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("GANFOLK_STORE_URL", raising=False)


# --------------------------------------------------------------------------- loopback server


@dataclass
class Served:
    """What the server holds and how it misbehaves; it records each request's Range header."""

    files: dict[str, bytes] = field(default_factory=dict)
    # path -> byte offset at which the next response for it is cut (once).
    cut_at: dict[str, int] = field(default_factory=dict)
    # paths whose body never comes (headers are sent, then the server stalls).
    slow: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        served: Served = self.server.served  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        served.requests.append((path, self.headers.get("Range")))
        data = served.files.get(path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng := self.headers.get("Range"):
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if path in served.slow:
            served.release.wait(10)
            return
        cut = served.cut_at.pop(path, None)
        if cut is not None:
            self.wfile.write(data[start:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data[start:])


@pytest.fixture
def server() -> Iterator[Served]:
    served = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.served = served  # type: ignore[attr-defined]
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served
    served.release.set()
    httpd.shutdown()
    httpd.server_close()


def _blob(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _manifest(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(body)
    return path


def _entry(url: str, *, file: str = "weights.pth", sha256: str | None = None, extra: str = "") -> str:
    pin = f'sha256 = "{sha256}"\n' if sha256 else ""
    return f"""
[[model]]
name = "test-upscaler"
service = "upscale"
licence = "test data"

[[model.files]]
file = "{file}"
url = "{url}"
{pin}{extra}settings = {{ GANFOLK_UPSCALE_CHECKPOINT = "{{uri}}", GANFOLK_UPSCALE_CHECKPOINT_SHA256 = "{{sha256}}" }}
"""


def _options(tmp_path: Path, **kw: object) -> PullOptions:
    defaults: dict[str, object] = {"timeout": 5.0, "attempts": 3, "retry_wait": 0.0, "progress": False}
    defaults.update(kw)
    return PullOptions(cache_dir=tmp_path / "downloads", **defaults)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- tests


def test_pull_stores_verifies_and_prints_settings(
    server: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _blob(300_000)
    sha = hashlib.sha256(data).hexdigest()
    server.files["/w.pth"] = data
    manifest = _manifest(tmp_path, _entry(f"{server.url}/w.pth", sha256=sha, extra=f"size = {len(data)}\n"))
    state = tmp_path / "state"

    rc = pull_models([], manifest=str(manifest), state_dir=str(state), retry_wait=0.0, progress=False)

    assert rc == 0
    store = open_store(state / "objects")
    assert store.get("models/weights.pth", sha) == data
    uri = store.uri("models/weights.pth")
    out = capsys.readouterr().out
    assert f"export GANFOLK_UPSCALE_CHECKPOINT={uri}" in out
    assert f"export GANFOLK_UPSCALE_CHECKPOINT_SHA256={sha}" in out
    env = (state / "models.env").read_text()
    assert f"GANFOLK_UPSCALE_CHECKPOINT={uri}\n" in env
    assert not list((state / "downloads").iterdir())  # stored, so the download is gone

    # A second pull finds the file in the store and fetches nothing.
    before = len(server.requests)
    assert pull_models([], manifest=str(manifest), state_dir=str(state), progress=False) == 0
    assert len(server.requests) == before


def test_resume_after_a_cut_connection_continues_at_the_cut(server: Served, tmp_path: Path) -> None:
    data = _blob(1_000_000, seed=1)
    sha = hashlib.sha256(data).hexdigest()
    server.files["/big.pth"] = data
    server.cut_at["/big.pth"] = 412_345
    entry = load_manifest(_manifest(tmp_path, _entry(f"{server.url}/big.pth", sha256=sha)))["test-upscaler"]
    store = open_store(tmp_path / "objects")

    (pulled,) = pull_entry(entry, store, _options(tmp_path))

    assert pulled.sha256 == sha
    assert store.get(pulled.key, sha) == data
    assert server.requests == [("/big.pth", None), ("/big.pth", "bytes=412345-")]


def test_a_failed_run_leaves_a_part_file_that_the_next_run_resumes(server: Served, tmp_path: Path) -> None:
    data = _blob(500_000, seed=2)
    server.files["/f.bin"] = data
    server.cut_at["/f.bin"] = 200_000
    dest = tmp_path / "dl" / "f.bin"

    with pytest.raises(DownloadError, match=r"closed at byte 200000 of 500000.*run the pull again"):
        download(f"{server.url}/f.bin", dest, attempts=1, progress=False)
    assert (tmp_path / "dl" / "f.bin.part").stat().st_size == 200_000

    download(f"{server.url}/f.bin", dest, attempts=1, progress=False)
    assert dest.read_bytes() == data
    assert server.requests[-1] == ("/f.bin", "bytes=200000-")
    assert not (tmp_path / "dl" / "f.bin.part").exists()


def test_a_complete_part_file_is_finished_without_a_body(server: Served, tmp_path: Path) -> None:
    data = _blob(10_000, seed=3)
    server.files["/done.bin"] = data
    dest = tmp_path / "done.bin"
    (tmp_path / "done.bin.part").write_bytes(data)

    download(f"{server.url}/done.bin", dest, attempts=1, progress=False)

    assert dest.read_bytes() == data
    assert server.requests == [("/done.bin", "bytes=10000-")]


def test_wrong_hash_deletes_the_file_and_names_both_hashes(server: Served, tmp_path: Path) -> None:
    data = _blob(50_000, seed=4)
    actual = hashlib.sha256(data).hexdigest()
    expected = hashlib.sha256(b"something else").hexdigest()
    server.files["/w.pth"] = data
    entry = load_manifest(_manifest(tmp_path, _entry(f"{server.url}/w.pth", sha256=expected)))[
        "test-upscaler"
    ]
    store = open_store(tmp_path / "objects")

    with pytest.raises(ChecksumError) as err:
        pull_entry(entry, store, _options(tmp_path))

    assert expected in str(err.value) and actual in str(err.value)
    assert "deleted" in str(err.value)
    assert list((tmp_path / "downloads").iterdir()) == []
    assert not store.exists("models/weights.pth")


def test_published_md5_is_checked(server: Served, tmp_path: Path) -> None:
    data = _blob(20_000, seed=5)
    server.files["/lama.pt"] = data
    wrong = hashlib.md5(b"other", usedforsecurity=False).hexdigest()
    entry = load_manifest(_manifest(tmp_path, _entry(f"{server.url}/lama.pt", extra=f'md5 = "{wrong}"\n')))
    with pytest.raises(ChecksumError, match=f"md5 mismatch.*expected {wrong}, got "):
        pull_entry(entry["test-upscaler"], open_store(tmp_path / "objects"), _options(tmp_path))
    assert list((tmp_path / "downloads").iterdir()) == []


def test_not_found_fails_at_once_naming_the_url(
    server: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{server.url}/missing.pth"
    manifest = _manifest(tmp_path, _entry(url))

    rc = main(["models", "pull", "--manifest", str(manifest), "--state-dir", str(tmp_path), "--no-progress"])

    assert rc == 1
    err = capsys.readouterr().err
    assert f"GET {url}: HTTP 404" in err
    assert server.requests == [("/missing.pth", None)]  # a 404 is not retried
    assert not (tmp_path / "models.env").exists()


def test_a_stalled_server_times_out(server: Served, tmp_path: Path) -> None:
    server.files["/slow.pth"] = _blob(10_000)
    server.slow.add("/slow.pth")
    started = time.monotonic()

    with pytest.raises(DownloadError, match=r"stalled for 0.3 s .*gave up after 2 attempt"):
        download(f"{server.url}/slow.pth", tmp_path / "slow.pth", timeout=0.3, attempts=2, retry_wait=0.0)

    assert time.monotonic() - started < 5
    assert len(server.requests) == 2


def test_bz2_is_decompressed_and_the_stored_file_verified(server: Served, tmp_path: Path) -> None:
    data = _blob(120_000, seed=6)
    sha = hashlib.sha256(data).hexdigest()
    server.files["/shape.dat.bz2"] = bz2.compress(data)
    manifest = _manifest(
        tmp_path,
        f"""
[[model]]
name = "landmarks"
service = "align"
licence = "test data"

[[model.files]]
file = "shape.dat"
url = "{server.url}/shape.dat.bz2"
decompress = "bz2"
size = {len(data)}
sha256 = "{sha}"
settings = {{ GANFOLK_ALIGN_LANDMARKS_MODEL = "{{local}}" }}
""",
    )
    state = tmp_path / "state"
    assert pull_models(["landmarks"], manifest=str(manifest), state_dir=str(state), progress=False) == 0
    stored = state / "objects" / "models" / "shape.dat"
    assert stored.read_bytes() == data
    assert f"GANFOLK_ALIGN_LANDMARKS_MODEL={stored}\n" in (state / "models.env").read_text()


def test_local_settings_keep_a_copy_when_the_store_is_s3(
    server: Served, tmp_path: Path, s3_store: S3Store
) -> None:
    data = _blob(30_000, seed=7)
    server.files["/det.dat"] = data
    body = _entry(f"{server.url}/det.dat", file="det.dat").replace(
        'GANFOLK_UPSCALE_CHECKPOINT = "{uri}", GANFOLK_UPSCALE_CHECKPOINT_SHA256 = "{sha256}"',
        'GANFOLK_ALIGN_CNN_DETECTOR_MODEL = "{local}"',
    )
    entry = load_manifest(_manifest(tmp_path, body))["test-upscaler"]
    (pulled,) = pull_entry(entry, s3_store, _options(tmp_path))
    assert pulled.uri.startswith("s3://")
    assert pulled.local == tmp_path / "downloads" / "det.dat"
    assert pulled.local.read_bytes() == data
    assert s3_store.get(pulled.key) == data


def test_open_clip_weights_come_through_open_clip_and_load_in_the_clip_loader(
    server: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI publishes TorchScript; the pull stores a state dict the CLIP loader accepts."""
    import torch

    from ganfolk.runtime import tv_compat  # noqa: F401

    # isort: split
    import open_clip.pretrained

    from services.clip.loader import load_clip
    from tests.fixtures.tiny_clip import save_tiny_clip

    config, checkpoint, _ = save_tiny_clip(tmp_path, "tiny-pull", seed=3)
    reference = load_clip("tiny-pull", str(checkpoint), model_config=config)
    scripted = tmp_path / "tiny-openai.pt"
    torch.jit.script(reference.model).save(str(scripted))
    server.files["/clip/tiny-openai.pt"] = scripted.read_bytes()
    # open_clip's registry entry for the tag, pointed at the loopback server (no hub).
    monkeypatch.setattr(
        open_clip.pretrained,
        "get_pretrained_cfg",
        lambda arch, tag: (
            {"url": f"{server.url}/clip/tiny-openai.pt"} if (arch, tag) == ("tiny-pull", "t") else {}
        ),
    )
    manifest = _manifest(
        tmp_path,
        """
[[model]]
name = "tiny-clip"
service = "clip"
licence = "test data"
settings = { GANFOLK_CLIP_MODEL = "tiny-pull" }

[[model.files]]
file = "tiny-pull.safetensors"
open_clip = "tiny-pull:t"
settings = { GANFOLK_CLIP_CHECKPOINT = "{uri}", GANFOLK_CLIP_CHECKPOINT_SHA256 = "{sha256}" }
""",
    )
    entry = load_manifest(manifest)["tiny-clip"]
    store = open_store(tmp_path / "objects")
    (pulled,) = pull_entry(entry, store, _options(tmp_path))

    loaded = load_clip("tiny-pull", pulled.uri, sha256=pulled.sha256, model_config=config)
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_image(image), reference.model.encode_image(image))
    assert not (tmp_path / "downloads" / "open_clip").exists()


def test_env_file_merges_and_keeps_other_settings(tmp_path: Path) -> None:
    env = tmp_path / "models.env"
    env.write_text("GANFOLK_A=1\nGANFOLK_B=old\n")
    update_env_file(env, {"GANFOLK_B": "new value", "GANFOLK_C": "3"})
    assert env.read_text() == "GANFOLK_A=1\nGANFOLK_B='new value'\nGANFOLK_C=3\n"


# --------------------------------------------------------------------------- the manifest


def _settings_fields() -> set[str]:
    """GANFOLK_* names of every field of every settings class in services/*/config.py."""
    names: set[str] = set()
    root = Path(__file__).resolve().parents[2] / "services"
    for config in sorted(root.glob("*/config.py")):
        module = importlib.import_module(f"services.{config.parent.name}.config")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Settings) and obj is not Settings:
                names.update(f"GANFOLK_{f.upper()}" for f in obj.model_fields)
    return names


def test_the_shipped_manifest_names_real_settings() -> None:
    entries = load_manifest()
    fields = _settings_fields()
    assert {"clip-vit-b-32-openai", "vqgan-imagenet-f16-16384", "realesrgan-x4plus", "lama-big"} <= set(
        entries
    )
    for entry in entries.values():
        assert entry.service in SERVICES
        assert entry.licence
        for name in entry.setting_names():
            assert name in fields, f"{entry.name}: {name} is not a field of any services/*/config.py settings"
        for f in entry.files:
            assert f.open_clip or f.url.startswith(("https://", "http://dlib.net/"))
            assert set(f.settings.values()) & set(TEMPLATES), f"{f.file} fills no setting from the file"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('service = "nope"', "service must be one of"),
        ('settings = { GANFOLK_X = "{path}" }', "placeholders are exactly one of"),
        ('url = "ftp://example.invalid/x"', "url must be http"),
        ('sha256 = "ABC"', "sha256 must be 64 lower-case hex"),
    ],
)
def test_a_malformed_manifest_names_the_fault(tmp_path: Path, body: str, message: str) -> None:
    good = {
        "service": 'service = "upscale"',
        "settings": 'settings = { GANFOLK_UPSCALE_CHECKPOINT = "{uri}" }',
        "url": 'url = "http://127.0.0.1:9/w.pth"',
        "sha256": "",
    }
    key = body.split(" ", 1)[0]
    good[key] = body
    text = f"""
[[model]]
name = "m"
{good["service"]}
licence = "x"

[[model.files]]
file = "w.pth"
{good["url"]}
{good["sha256"]}
{good["settings"]}
"""
    with pytest.raises(ManifestError, match=message):
        load_manifest(_manifest(tmp_path, text))
