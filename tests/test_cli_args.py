"""Usage errors of the job commands: argparse refuses them before any connection is made."""

from __future__ import annotations

import pytest

from ganfolk import cli


@pytest.mark.parametrize("flag", ["--samples", "--task-size", "--seed", "--top-k"])
@pytest.mark.parametrize(("value", "reason"), [("-5", "negative"), ("lots", "not a whole number")])
def test_bad_counts_are_usage_errors(
    flag: str, value: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["portrait", "a portrait", flag, value])
    assert exited.value.code == 2
    assert reason in capsys.readouterr().err
