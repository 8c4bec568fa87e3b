"""The shared limits: one-line text fields, job ids, titles that fit."""

from __future__ import annotations

import pytest

from ganfolk.runtime import limits
from ganfolk.runtime.errors import InvalidArgument


def test_check_line_keeps_words_and_refuses_what_breaks_a_line() -> None:
    assert limits.check_line("  Zoë, 12 — «portrait» 👧 ", "prompt", 50) == "Zoë, 12 — «portrait» 👧"
    assert limits.check_line("", "prompt", 5) == ""
    for value, words in (
        ("a\tb", "'\\t'"),
        ("a\x00b", "'\\x00'"),
        ("a\x1bb", "U+001B"),
        ("a\u2029b", "PARAGRAPH SEPARATOR"),
        ("   ", "only whitespace"),
        ("x" * 6, "is 6 characters; keep it to 5"),
    ):
        with pytest.raises(InvalidArgument, match="prompt") as err:
            limits.check_line(value, "prompt", 5 if value.startswith("x") else 50)
        assert words in str(err.value)


def test_job_ids() -> None:
    good = "job-" + "0123456789abcdef" + "01234567"
    assert limits.check_job_id(good) == good
    for bad in ("", ">", "job-*", "job 1", good + ".x", good.upper(), good[:-1]):
        with pytest.raises(InvalidArgument, match="job_id"):
            limits.check_job_id(bad)


def test_fit_title_cuts_the_prompt_at_a_word_and_keeps_the_name() -> None:
    assert limits.fit_title("oil portrait", " — Ana Silva") == "oil portrait — Ana Silva"
    title = limits.fit_title("word " * 100, " — Ana Silva", limit=40)
    assert len(title) <= 40 and title.endswith("word… — Ana Silva")
    assert len(limits.fit_title("x" * 300, "")) == limits.MAX_MINT_TITLE_CHARS
    assert len(limits.fit_title("p", "n" * 300, limit=20)) == 20
