"""The golden files ship with the repository: every one SHA256SUMS lists is present and unchanged."""

from __future__ import annotations

import pytest

from ganfolk.runtime.hashing import file_sha256
from tests.fixtures import golden

LISTED = golden.listed()


def test_every_data_file_is_listed() -> None:
    # An unlisted file would never be checked, and the tests could drift onto it unnoticed.
    present = {p.name for p in golden.GOLDEN.iterdir() if p.is_file()} - {"README.md", "SHA256SUMS"}
    assert present == set(LISTED)


def test_readme_describes_every_file() -> None:
    readme = (golden.GOLDEN / "README.md").read_text()
    undocumented = [
        name for name in LISTED if name not in readme and not _keys_family_documented(name, readme)
    ]
    assert not undocumented


def _keys_family_documented(name: str, readme: str) -> bool:
    # stylegan2_keys_{256,512,1024}_cm2.json are described together under one brace pattern.
    return name.startswith("stylegan2_keys_") and "stylegan2_keys_{256,512,1024}_cm2.json" in readme


@pytest.mark.parametrize("name", sorted(LISTED))
def test_file_matches_its_sha256(name: str) -> None:
    assert file_sha256(golden.path(name)) == LISTED[name]


def test_missing_file_raises_with_its_path() -> None:
    with pytest.raises(FileNotFoundError, match=r"tests/data/golden/no-such-file\.pt"):
        golden.path("no-such-file.pt")
