"""Names that fit the person: nationality and demonyms to countries, person words to gender and age,
and names from the right country's list and gender (names-dataset, loaded once per session)."""

from __future__ import annotations

import pytest

from services.text.config import TextSettings
from services.text.core import TextCore, parse_name, parse_prompt, read_prompt, resolve_subject, template_name
from services.text.countries import COUNTRIES, find_country, find_group, resolve
from services.text.llm import LLMClient
from services.text.names import CURATED, NameSource
from services.text.notability import NotabilityChecker
from services.text.persons import find_person
from tests.text.conftest import Scripted

# prompt or description -> (country, gender: m/f/"" for either, age group)
PROMPTS = [
    ("charcoal sketch of an inquisitive Turkish boy", "TR", "m", "child"),
    ("a mischievous English teenager", "GB", "", "teen"),
    ("oil painting of a cheerful Portuguese grandmother", "PT", "f", "elder"),
    ("pencil drawing of a shy Bulgarian girl", "BG", "f", "child"),
    ("a proud Québécois fisherman", "CA", "m", "adult"),
    ("watercolor painting of a serene Nigerian woman", "NG", "f", "adult"),
    ("a thoughtful Brazilian girl", "BR", "f", "child"),
    ("etching of a stoic Scottish old man", "GB", "m", "elder"),
    ("a curious Welsh schoolboy", "GB", "m", "child"),
    ("studio photograph of a confident Irish young woman", "IE", "f", "young adult"),
    ("a dreamy Icelandic widow", "IS", "f", "elder"),
    ("ink drawing of a gentle Japanese grandfather", "JP", "m", "elder"),
    ("a playful Korean little boy", "KR", "m", "child"),
    ("pastel portrait of a wise Chinese grandmother", "CN", "f", "elder"),
    ("a pensive Indian student", "IN", "", "young adult"),
    ("gouache painting of a joyful Mexican bride", "MX", "f", "young adult"),
    ("a determined Argentine father", "AR", "m", "adult"),
    ("a kind Peruvian mother", "PE", "f", "adult"),
    ("charcoal sketch of a shy Colombian teenage girl", "CO", "f", "teen"),
    ("a proud Chilean man", "CL", "m", "adult"),
    ("a serene Egyptian old woman", "EG", "f", "elder"),
    ("an inquisitive Moroccan boy", "MA", "m", "child"),
    ("a gentle Ghanaian grandfather", "GH", "m", "elder"),
    ("a cheerful South African girl", "ZA", "f", "child"),
    ("a stoic Ethiopian farmer", "ET", "", "adult"),
    ("woodcut print of a curious Russian boy", "RU", "m", "child"),
    ("a dreamy Polish young man", "PL", "m", "young adult"),
    ("a thoughtful Czech woman", "CZ", "f", "adult"),
    ("a wise Hungarian grandmother", "HU", "f", "elder"),
    ("a confident German businesswoman", "DE", "f", "adult"),
    ("a joyful Dutch girl", "NL", "f", "child"),
    ("a playful French boy", "FR", "m", "child"),
    ("a shy Spanish girl", "ES", "f", "child"),
    ("a proud Italian grandfather", "IT", "m", "elder"),
    ("a kind Greek fisherman", "GR", "m", "adult"),
    ("an elderly Swedish man", "SE", "m", "elder"),
    ("a curious Norwegian teenage boy", "NO", "m", "teen"),
    ("a serene Finnish woman", "FI", "f", "adult"),
    ("a determined Danish mother", "DK", "f", "adult"),
    ("a cheerful Filipina nurse", "PH", "", "adult"),
    ("an inquisitive Indonesian boy", "ID", "m", "child"),
    ("a pensive Vietnamese grandmother", "VN", "f", "elder"),
    ("a gentle Iranian man", "IR", "m", "adult"),
    ("a mischievous Lebanese girl", "LB", "f", "child"),
    ("a wise Israeli grandmother", "IL", "f", "elder"),
    ("a stoic Kazakh shepherd", "KZ", "", "adult"),
    ("a 7-year-old Uruguayan girl", "UY", "f", "child"),
    ("a young Jamaican painter", "JM", "", "young adult"),
    ("a proud Kenyan grandmother", "KE", "f", "elder"),
    ("a Senegalese fisherman", "SN", "m", "adult"),
]


def test_every_country_of_names_dataset_has_a_demonym(name_source: NameSource) -> None:
    dataset_codes = set(name_source.dataset().country_codes)
    assert len(dataset_codes) == 105
    assert dataset_codes <= set(COUNTRIES)
    assert set(CURATED) <= set(COUNTRIES)
    for country in COUNTRIES.values():
        for word in (country.demonym, country.name):
            found = find_country(f"a shy {word} girl")
            assert found is not None and found[0].code == country.code, word


@pytest.mark.parametrize(("text", "code", "gender", "age"), PROMPTS)
def test_nationality_and_person_words(text: str, code: str, gender: str, age: str) -> None:
    found = find_country(text)
    assert found is not None and found[0].code == code
    person = find_person(text)
    assert person is not None and (person.gender, person.age_group) == (gender, age)


def test_every_template_name_is_a_valid_name(name_source: NameSource) -> None:
    """No pool holds what the name parser refuses ("Man", initials, a country's name)."""
    for code in COUNTRIES:
        pools = name_source.pools(code)
        assert pools is not None, code
        males, females, surnames = pools
        for first, last in zip(males + females, surnames[1:] + surnames[:1] + surnames, strict=False):
            if first == last:
                continue  # template_name never pairs a name with itself
            assert parse_name(f"{first} {last}") == (first, last), (code, first, last)


def test_the_table_is_large_and_varied() -> None:
    assert len(PROMPTS) >= 40
    assert len({code for _, code, _, _ in PROMPTS}) >= 40
    assert {g for _, _, g, _ in PROMPTS} == {"m", "f", ""}


@pytest.mark.parametrize(("text", "code", "gender", "age"), PROMPTS)
def test_template_names_belong_to_the_country_and_gender(
    text: str, code: str, gender: str, age: str, name_source: NameSource
) -> None:
    males, females, surnames = name_source.pools(code) or ((), (), ())
    for seed in range(3):
        subject = resolve_subject(text, seed, name_source)
        assert subject.country.code == code and subject.stated_gender == gender
        first, last = template_name(text, seed, source=name_source)
        assert first in (males if subject.gender == "m" else females), (text, first)
        assert last in surnames, (text, last)
        assert parse_name(f"{first} {last}") == (first, last)  # what an LLM answer must pass too
        if code in name_source.dataset().country_codes:
            assert name_source.fits(first, last, code, subject.gender).reason is None


def test_the_article_prompts_and_free_form_prompts() -> None:
    parts = parse_prompt("charcoal sketch of an inquisitive Turkish boy")
    assert (parts.medium, parts.adjective, parts.nationality, parts.person) == (
        "charcoal sketch",
        "inquisitive",
        "Turkish",
        "boy",
    )
    assert parse_prompt("oil painting of a mischievous english teenager").nationality == "English"
    assert parse_prompt("Ink drawing of a shy South African grandmother").country.code == "ZA"
    assert read_prompt("a dog in a field of sunflowers, in the style of Van Gogh") is None
    assert read_prompt("portrait of a woman from Bulgaria by the sea") is None  # free form, passed through


def test_no_nationality_names_follow_the_other_words_and_say_so(name_source: NameSource) -> None:
    african = resolve_subject("an African dancer at dusk", 1, name_source)
    assert african.country.code in find_group("African")[0]  # type: ignore[index]
    assert any("for 'african'" in n for n in african.notes)
    anyone = resolve_subject("a portrait in the rain", 1, name_source)
    assert any(n.startswith("nationality: none in the description") for n in anyone.notes)
    assert any(n.startswith("gender: none in the description") for n in anyone.notes)
    assert resolve_subject("a portrait in the rain", 1, name_source) == anyone  # deterministic per seed


def test_filters_resolve_countries_and_regions() -> None:
    assert resolve("Bulgarian") == ("BG",) and resolve("bg") == ("BG",) and resolve("Portugal") == ("PT",)
    assert set(resolve("Nordic")) == {"DK", "NO", "SE", "IS", "FI"}
    assert "BR" in resolve("South America")
    with pytest.raises(ValueError, match="not a known nationality"):
        resolve("Martian")


def test_fit_check(name_source: NameSource) -> None:
    assert name_source.fits("Mehmet", "Kaya", "TR", "m").reason is None
    assert "not a first name in TR" in (name_source.fits("Larissa", "Moura", "TR", "m").reason or "")
    assert "not a male first name" in (name_source.fits("Fatma", "Kaya", "TR", "m").reason or "")
    assert "not a surname in PT" in (name_source.fits("João", "Yilmaz", "PT", "m").reason or "")
    assert name_source.fits("João", "Silva", "PT", "").reason is None  # either gender


async def test_llm_names_that_do_not_fit_are_reasked(
    scripted: Scripted, notability: NotabilityChecker, name_source: NameSource
) -> None:
    settings = TextSettings(text_llm_base_url=scripted.base_url, text_wikipedia_api_url="")
    llm = LLMClient(scripted.base_url, "scripted", None, timeout=5, retries=0, retry_wait=0.01)
    core = TextCore(settings, llm, notability)
    scripted.play("Larissa Moura", "Fatma Kaya", "Mehmet Kaya")
    result = await core.name("an inquisitive Turkish boy", seed=1, max_attempts=4)
    assert (result.first, result.last) == ("Mehmet", "Kaya")
    assert [r.split(":")[0] for r in result.outcome.rejected] == ["misfit", "misfit"]
    assert "Create a male Turkish name for" in scripted.requests[0]["messages"][-1]["content"]
    assert "notability: offline only" in result.outcome.notes
