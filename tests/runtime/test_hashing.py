"""ganfolk.runtime.hashing is correct, and it is the only file hasher in the repository."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

from ganfolk.runtime.hashing import CHUNK_BYTES, file_sha256, hash_file, sha256_hex

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "ganfolk" / "runtime" / "hashing.py"


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    for size in (0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, 2 * CHUNK_BYTES + 7):
        data = bytes(i % 251 for i in range(size))
        path = tmp_path / f"f{size}.bin"
        path.write_bytes(data)
        expected = hashlib.sha256(data).hexdigest()
        assert file_sha256(path) == expected == sha256_hex(data)
        assert file_sha256(str(path)) == expected
        assert hash_file(path) == (size, {"sha256": expected})
        assert hash_file(path, ("sha256", "md5")) == (
            size,
            {"sha256": expected, "md5": hashlib.md5(data, usedforsecurity=False).hexdigest()},
        )
    with pytest.raises(ValueError, match="at least one algorithm"):
        hash_file(tmp_path / "f0.bin", ())


def _python_files() -> list[Path]:
    files = []
    for top in ("ganfolk", "services", "tests", "bench"):
        files += [p for p in (ROOT / top).rglob("*.py") if "v1" not in p.relative_to(ROOT).parts[:2]]
    return files


def _name(call: ast.Call) -> str:
    """``hashlib.sha256`` for ``hashlib.sha256(...)``, ``.read_bytes`` for ``p.read_bytes()``."""
    f = call.func
    if isinstance(f, ast.Attribute):
        return f"{f.value.id if isinstance(f.value, ast.Name) else ''}.{f.attr}"
    return f.id if isinstance(f, ast.Name) else ""


def _file_hashing(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether ``fn`` hashes a file: ``hashlib.X(p.read_bytes())``, or an incremental
    ``hashlib.X()`` fed by ``update`` in a function that opens a file, or ``hashlib.file_digest``."""
    calls = [c for c in ast.walk(fn) if isinstance(c, ast.Call)]
    names = [_name(c) for c in calls]
    hashers = [c for c in calls if _name(c).startswith("hashlib.") and _name(c) != "hashlib.file_digest"]
    if "hashlib.file_digest" in names:
        return True
    for h in hashers:
        inner = [_name(c) for a in h.args for c in ast.walk(a) if isinstance(c, ast.Call)]
        if any(n.endswith((".read_bytes", ".read")) for n in inner):
            return True
    incremental = any(not h.args for h in hashers)
    opens = any(n == "open" or n.endswith(".open") for n in names)
    return incremental and opens and any(n.endswith(".update") for n in names)


def test_no_other_file_sha256_helper() -> None:
    """Files are hashed by ganfolk.runtime.hashing only, so there is one way to do it."""
    offenders = []
    for path in _python_files():
        if path == HELPER:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _file_hashing(node):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not offenders, f"use ganfolk.runtime.hashing (file_sha256, hash_file) instead of: {offenders}"


def test_the_check_catches_the_copies_it_replaced() -> None:
    """The shapes the old copies had (chunked loop, read_bytes) are caught; hashing bytes is not."""
    caught = {
        "chunked": "def f(p):\n    h = hashlib.sha256()\n    with p.open('rb') as f:\n"
        "        for c in iter(lambda: f.read(1), b''):\n            h.update(c)\n    return h.hexdigest()\n",
        "builtin_open": "def f(p):\n    h = hashlib.sha256()\n    with open(p, 'rb') as f:\n"
        "        h.update(f.read())\n    return h.hexdigest()\n",
        "read_bytes": "def f(p):\n    return hashlib.sha256(p.read_bytes()).hexdigest()\n",
        "file_digest": "def f(fh):\n    return hashlib.file_digest(fh, 'sha256').hexdigest()\n",
    }
    for name, src in caught.items():
        fn = ast.parse(src).body[0]
        assert isinstance(fn, ast.FunctionDef) and _file_hashing(fn), name
    fine = "def f(p, data):\n    p.write_bytes(data)\n    return hashlib.sha256(data).hexdigest()\n"
    fn = ast.parse(fine).body[0]
    assert isinstance(fn, ast.FunctionDef) and not _file_hashing(fn)
