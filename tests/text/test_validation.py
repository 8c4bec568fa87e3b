"""Parsing and validation of LLM answers, balance and the template writer (no LLM here)."""

from __future__ import annotations

from collections import Counter

import pytest

from services.text import core
from services.text.core import (
    REGIONS,
    balanced_subjects,
    clean_backstory,
    parse_name,
    parse_prompt,
    template_backstory,
    template_name,
    template_prompt,
    validate_backstory,
)
from services.text.notability import NotabilityChecker


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        ("charcoal sketch of an inquisitive Turkish boy", "charcoal sketch of an inquisitive Turkish boy"),
        ("1. Oil painting of a shy Kenyan mother, smiling.", "oil painting of a shy Kenyan mother"),
        ('"ink portrait of a odd Thai old woman"', "ink portrait of an odd Thai old woman"),
        ("A pencil drawing of a shy Peruvian girl\nanother line", "pencil drawing of a shy Peruvian girl"),
    ],
)  # fmt: skip
def test_good_prompts_parse_into_parts(answer: str, text: str) -> None:
    parts = parse_prompt(answer)
    assert parts.text == text
    assert parts.medium and parts.adjective and parts.nationality and parts.person


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "Here are four prompts to bring your ideas to life:",
        "charcoal sketch of a Turkish boy",  # no adjective
        "charcoal sketch of an inquisitive Martian boy",  # no nationality
        "dance of a happy French girl",  # no medium
        "charcoal sketch of an inquisitive Turkish robot",  # no person
        "charcoal sketch of the inquisitive Turkish boy",
        "a very long winded elaborate oil painting of a cheerful Kenyan grandmother",
    ],
)
def test_bad_prompts_are_rejected(answer: str) -> None:
    with pytest.raises(ValueError):
        parse_prompt(answer)


@pytest.mark.parametrize(
    ("answer", "first", "last"),
    [
        ("Sophia Santos", "Sophia", "Santos"),
        ("Name: Larissa Moura.", "Larissa", "Moura"),
        ("José Álvarez\n\nJosé is a name of Spanish origin.", "José", "Álvarez"),
        ("Anne-Marie O'Neil", "Anne-Marie", "O'Neil"),
        ("Elisa Bossa, a painter of the French 19th century.", "Elisa", "Bossa"),
    ],
)
def test_good_names(answer: str, first: str, last: str) -> None:
    assert parse_name(answer) == (first, last)


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "Sophia",
        "Sophia Maria Santos",
        "sophia santos",
        "SOPHIA SANTOS",
        "The Girl",
        "R2 D2",
        "Luxo in Rio",
        "A Z",
    ],
)
def test_bad_names(answer: str) -> None:
    with pytest.raises(ValueError):
        parse_name(answer)


def test_backstory_trimmed_to_last_full_sentence_within_limit() -> None:
    answer = (
        "Sophia grew up in Recife. She loves the sea and old maps. She wants to sail around the world one day"
    )
    assert clean_backstory(answer, 12) == "Sophia grew up in Recife. She loves the sea and old maps."
    assert clean_backstory("Sophia\x07 grew up   in Recife.", 40) == "Sophia grew up in Recife."
    assert clean_backstory("one two three four five six", 3) == ""


def test_backstory_validation() -> None:
    good = "Sophia Santos grew up in Recife, where she learned to paint boats with her grandfather."
    assert validate_backstory(good, "Sophia Santos", 40, 5) == good
    with pytest.raises(ValueError, match="does not mention"):
        validate_backstory(
            "Maria grew up in Recife and learned to paint boats with her uncle.", "Sophia Santos", 40, 5
        )
    with pytest.raises(ValueError, match="fewer"):
        validate_backstory("Sophia paints.", "Sophia Santos", 40, 5)
    with pytest.raises(ValueError, match="more than"):
        validate_backstory(good, "Sophia Santos", 8, 5)
    with pytest.raises(ValueError, match="refusal"):
        validate_backstory(
            "I'm sorry, as an AI I cannot write about Sophia Santos here.", "Sophia Santos", 40, 5
        )
    with pytest.raises(ValueError, match="no complete sentence"):
        validate_backstory("", "Sophia Santos", 40, 5)


def test_subjects_are_balanced_over_regions_ages_and_genders() -> None:
    subjects = balanced_subjects(len(REGIONS) * 3, seed=7)
    region_of = {n: i for i, region in enumerate(REGIONS) for n in region}
    assert Counter(region_of[n] for n, _ in subjects) == dict.fromkeys(range(len(REGIONS)), 3)
    first_round = [region_of[n] for n, _ in subjects[: len(REGIONS)]]
    assert sorted(first_round) == list(range(len(REGIONS)))
    genders = Counter(core.PERSONS[p] for _, p in subjects)
    assert abs(genders["m"] - genders["f"]) <= 2
    assert balanced_subjects(10, seed=7) == balanced_subjects(10, seed=7)
    assert balanced_subjects(10, seed=7) != balanced_subjects(10, seed=8)


def test_template_writer_is_valid_and_deterministic(notability: NotabilityChecker) -> None:
    for i, (nationality, person) in enumerate(balanced_subjects(30, seed=1)):
        parts = template_prompt(nationality, person, i)
        assert parse_prompt(parts.text) == parts
        assert template_prompt(nationality, person, i) == parts
    first, last = template_name("a thoughtful Brazilian girl", 3)
    assert first in core.NAMES["Brazilian"][1] and last in core.NAMES["Brazilian"][2]
    assert template_name("a thoughtful Brazilian girl", 3) == (first, last)
    assert notability.check(f"{first} {last}") is None
    story = template_backstory(f"{first} {last}", "a thoughtful Brazilian girl", 3, 60)
    assert validate_backstory(story, f"{first} {last}", 60, 10) == story
    they = template_backstory("Kim Park", "a curious Korean teenager", 2, 60)
    assert "they was" not in they and "they spends" not in they


def test_template_names_come_from_names_dataset() -> None:
    """Real per-country names shipped in a registry package (loaded once, ~2 GB)."""
    pytest.importorskip("names_dataset", reason="names-dataset is not installed (make setup installs it)")
    from services.text.names import NameSource

    source = NameSource()
    males, females, surnames = source.pools("Turkish") or ((), (), ())
    assert "Mehmet" in males and "Fatma" in females and "Kaya" in surnames
    first, last = template_name("an inquisitive Turkish boy", 4, source=source)
    assert first in males and last in surnames
    assert template_name("an inquisitive Turkish boy", 4, source=source) == (first, last)
    assert source.pools("Senegalese") is None  # not in the dataset: the curated table answers
    first, last = template_name("a proud Senegalese woman", 4, source=source)
    assert first in core.NAMES["Senegalese"][1]
