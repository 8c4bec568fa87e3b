"""ganfolk.runtime.hashing is correct, and it is the only file hasher in the repository."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from ganfolk.runtime.hashing import CHUNK_BYTES, file_sha256, file_size_sha256, sha256_hex

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
        assert file_size_sha256(path) == (size, expected)


def _python_files() -> list[Path]:
    files = []
    for top in ("ganfolk", "services", "tests", "bench"):
        files += [p for p in (ROOT / top).rglob("*.py") if "v1" not in p.relative_to(ROOT).parts[:2]]
    return files


def _calls(node: ast.AST) -> list[str]:
    names = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            f = sub.func
            if isinstance(f, ast.Attribute):
                base = f.value.id if isinstance(f.value, ast.Name) else ""
                names.append(f"{base}.{f.attr}")
            elif isinstance(f, ast.Name):
                names.append(f.id)
    return names


def test_no_other_file_sha256_helper() -> None:
    """A function that both reads a file and feeds hashlib.sha256 is a second file hasher."""
    hashes = {"hashlib.sha256", "hashlib.file_digest", "hashlib.new"}
    reads = {"open", "read_bytes", "open_binary"}
    offenders = []
    for path in _python_files():
        if path == HELPER:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            calls = _calls(node)
            hashes_something = any(c in hashes for c in calls)
            reads_a_file = any(c.rpartition(".")[2] in reads for c in calls)
            if hashes_something and reads_a_file:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not offenders, f"use ganfolk.runtime.hashing.file_sha256 instead of: {offenders}"
