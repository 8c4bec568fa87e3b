"""Parsing and validation of LLM answers, balance and the template writer (no LLM here)."""

from __future__ import annotations

from collections import Counter

import pytest

from services.text.core import (
    CollectionFilter,
    balanced_subjects,
    clean_backstory,
    parse_name,
    parse_prompt,
    template_backstory,
    template_name,
    template_prompt,
    validate_backstory,
)
from services.text.countries import COUNTRIES, REGIONS
from services.text.names import CURATED, NameSource
from services.text.notability import NotabilityChecker
from services.text.persons import PERSONS


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
        "charcoal sketch of an inquisitive Turkish Kenyan boy",  # two nationalities
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
    countries = tuple(COUNTRIES)
    plans = balanced_subjects(len(REGIONS) * 3, seed=7, countries=countries)
    region_of = {c: r for r, codes in REGIONS.items() for c in codes}
    assert Counter(region_of[p.country.code] for p in plans) == dict.fromkeys(REGIONS, 3)
    first_round = [region_of[p.country.code] for p in plans[: len(REGIONS)]]
    assert sorted(first_round) == sorted(REGIONS)
    genders = Counter(PERSONS[p.person].gender for p in plans)
    assert abs(genders["m"] - genders["f"]) <= 1
    ages = Counter(PERSONS[p.person].age_group for p in plans[:10])
    assert ages == dict.fromkeys(("child", "teen", "young adult", "adult", "elder"), 2)
    assert balanced_subjects(10, seed=7, countries=countries) == balanced_subjects(
        10, seed=7, countries=countries
    )
    assert balanced_subjects(10, seed=7, countries=countries) != balanced_subjects(
        10, seed=8, countries=countries
    )


def test_template_writer_is_valid_and_deterministic(notability: NotabilityChecker) -> None:
    for i, plan in enumerate(balanced_subjects(30, seed=1)):
        parts = template_prompt(plan, i)
        assert parse_prompt(parts.text) == parts
        assert template_prompt(plan, i) == parts
    first, last = template_name("a thoughtful Brazilian girl", 3)
    assert first in CURATED["BR"][1] and last in CURATED["BR"][2]
    assert template_name("a thoughtful Brazilian girl", 3) == (first, last)
    assert notability.check(f"{first} {last}") is None
    story = template_backstory(f"{first} {last}", "a thoughtful Brazilian girl", 3, 60)
    assert validate_backstory(story, f"{first} {last}", 60, 10) == story
    they = template_backstory("Kim Park", "a curious Korean teenager", 2, 60)
    assert "they was" not in they and "they spends" not in they
    assert "a Indian" not in template_backstory("Priya Sharma", "a shy Indian girl", 1, 60)


def test_template_names_come_from_names_dataset(name_source: NameSource) -> None:
    """Real per-country names shipped in a registry package (loaded once, ~2 GB)."""
    males, females, surnames = name_source.pools("TR") or ((), (), ())
    assert "Mehmet" in males and "Fatma" in females and "Kaya" in surnames
    first, last = template_name("an inquisitive Turkish boy", 4, source=name_source)
    assert first in males and last in surnames
    assert template_name("an inquisitive Turkish boy", 4, source=name_source) == (first, last)
    assert name_source.pools("SN") == CURATED["SN"]  # not in the dataset: the curated table answers
    first, last = template_name("a proud Senegalese woman", 4, source=name_source)
    assert first in CURATED["SN"][1]


def test_collection_filter_keeps_the_balance_within_it() -> None:
    wanted = CollectionFilter(("PT", "BG", "GB"), ("child", "elder"), ("f", "m"), ("charcoal sketch",))
    plans = balanced_subjects(12, seed=3, wanted=wanted)
    assert Counter(p.country.code for p in plans) == {"PT": 4, "BG": 4, "GB": 4}
    cells = Counter((PERSONS[p.person].age_group, PERSONS[p.person].gender) for p in plans)
    assert cells == {("child", "f"): 3, ("child", "m"): 3, ("elder", "f"): 3, ("elder", "m"): 3}
    assert {p.medium for p in plans} == {"charcoal sketch"}
    for i, plan in enumerate(plans):
        parts = template_prompt(plan, i)
        assert parts.medium == "charcoal sketch" and parts.country.code == plan.country.code
