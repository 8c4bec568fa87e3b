"""Our IPFS CIDs equal those of an independent implementation: Debian's ``ipfs_cid`` (rust-cid-npm)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.mint import ipfs_cid
from services.mint.ipfs import CHUNK_SIZE, MAX_LINKS, cid_v0_to_v1, ipfs_cid_v0, is_cid


def reference_cids(path: Path) -> dict[str, str]:
    """CIDv0 and CIDv1 of a file as the ``ipfs_cid`` program (apt ``ipfs-cid``) prints them."""
    program = shutil.which("ipfs_cid")
    assert program, "the ipfs_cid program is missing: apt-get install ipfs-cid (scripts/setup.sh does)"
    out = subprocess.run([program, str(path)], capture_output=True, text=True, check=True, timeout=60)
    cids: dict[str, str] = json.loads(out.stdout)
    return cids


def test_hello_is_the_well_known_cid(tmp_path: Path) -> None:
    assert ipfs_cid_v0(b"hello") == "QmWfVY9y3xjsixTgbd9AorQxH7VtMpzfx2HaWtsoUYecaX"
    assert ipfs_cid(b"hello").startswith("bafybei")
    assert cid_v0_to_v1(ipfs_cid_v0(b"hello")) == ipfs_cid(b"hello")
    # The empty file every IPFS node knows.
    assert ipfs_cid_v0(b"") == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        5,
        CHUNK_SIZE - 1,
        CHUNK_SIZE,
        CHUNK_SIZE + 1,
        3 * 1024 * 1024 + 17,  # a few MB: one level of links
        CHUNK_SIZE * (MAX_LINKS + 1) + 3,  # 175 chunks: the balanced DAG grows a second level
    ],
)
def test_cids_match_the_ipfs_cid_program(tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    reference = reference_cids(path)
    assert ipfs_cid_v0(data) == reference["CIDv0"]
    assert ipfs_cid(data) == reference["CIDv1"]
    assert is_cid(reference["CIDv0"]) and is_cid(reference["CIDv1"])


def test_is_cid_rejects_other_text() -> None:
    assert not is_cid("") and not is_cid("https://example.com/x") and not is_cid("QmNotBase58!!")
