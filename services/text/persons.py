"""Who a prompt shows: the person word, its gender and its age group.

Gender decides which first names fit ("boy" male, "grandmother" female, "teenager" or
"painter" either); the age group keeps collections balanced from children to elders and lets
the backstory check catch a "boy" with grandchildren. Age words in the description ("an
elderly Turkish man", "a 7-year-old girl") override the person word's own age group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AGE_GROUPS: tuple[str, ...] = ("child", "teen", "young adult", "adult", "elder")
GENDERS: dict[str, str] = {"female": "f", "male": "m"}
# Age range in years of each group, for "a 7-year-old" and the backstory check.
AGE_YEARS: dict[str, tuple[int, int]] = {
    "child": (0, 12),
    "teen": (13, 19),
    "young adult": (18, 30),
    "adult": (25, 64),
    "elder": (60, 120),
}

# age group | gender (m, f, - for either) | person words
_TABLE = """
child | m | boy, little boy, schoolboy, baby boy, young boy, son
child | f | girl, little girl, schoolgirl, baby girl, young girl, daughter
child | - | child, kid, toddler, baby, infant, schoolchild, youngster
teen | m | teenage boy, teen boy
teen | f | teenage girl, teen girl
teen | - | teenager, teen, adolescent
young adult | m | young man, lad, groom, bridegroom, young father
young adult | f | young woman, lass, maiden, bride, young mother, young lady
young adult | - | young person, young adult, student, university student
adult | m | man, gentleman, father, husband, dad, brother, uncle, businessman, fisherman, policeman, monk, \
    priest, craftsman, nobleman, king, prince, waiter, actor, middle-aged man
adult | f | woman, lady, mother, wife, mum, mom, sister, aunt, businesswoman, fisherwoman, policewoman, nun, \
    craftswoman, noblewoman, queen, princess, waitress, actress, middle-aged woman
adult | - | person, adult, parent, farmer, painter, artist, teacher, doctor, nurse, sailor, soldier, \
    musician, poet, writer, scientist, merchant, baker, tailor, weaver, dancer, singer, worker, shepherd, \
    potter, blacksmith, carpenter, chef, cook, scholar, traveller, traveler, villager, athlete, \
    engineer, architect
elder | m | old man, elderly man, grandfather, grandpa, grandad, granddad, widower, old gentleman, \
    old fisherman, old farmer
elder | f | old woman, elderly woman, grandmother, grandma, granny, widow, old lady, elderly lady
elder | - | elder, grandparent, elderly person, old person, pensioner, retiree, elderly
"""

# Words that move the age group of an adult who follows: "an elderly Kenyan painter". A
# "young boy" stays a child, and "old" in "an old-fashioned portrait of a girl" ages no girl.
_AGE_WORDS = (
    (re.compile(r"\b(?:elderly|old|aged|aging|ageing|retired|wrinkled|grey-haired|gray-haired)\b"), "elder"),
    (re.compile(r"\bmiddle-aged\b"), "adult"),
    (re.compile(r"\b(?:teenage|teenaged)\b"), "teen"),
    (re.compile(r"\byoung\b"), "young adult"),
)
_ADULT_GROUPS = ("young adult", "adult")
_YEARS_OLD = re.compile(r"\b(\d{1,3})[- ]year[- ]old\b|\baged (\d{1,3})\b")


@dataclass(frozen=True)
class PersonWord:
    word: str
    gender: str  # "m", "f" or "" for either
    age_group: str


def _load() -> dict[str, PersonWord]:
    out: dict[str, PersonWord] = {}
    for line in _TABLE.replace("\\\n", "").strip().splitlines():
        age, gender, words = (field.strip() for field in line.split("|"))
        assert age in AGE_GROUPS, age
        for word in (w.strip() for w in words.split(",")):
            out[word] = PersonWord(word, "" if gender == "-" else gender, age)
    return out


PERSONS: dict[str, PersonWord] = _load()
_PERSON_RE = re.compile(
    r"(?<![\w-])(" + "|".join(map(re.escape, sorted(PERSONS, key=len, reverse=True))) + r")(?![\w-])"
)
# Person words balanced collections use, per (age group, gender).
CYCLE: dict[tuple[str, str], tuple[str, ...]] = {
    ("child", "f"): ("girl", "little girl", "schoolgirl"),
    ("child", "m"): ("boy", "little boy", "schoolboy"),
    ("teen", "f"): ("teenage girl",),
    ("teen", "m"): ("teenage boy",),
    ("young adult", "f"): ("young woman", "bride", "student"),
    ("young adult", "m"): ("young man", "student", "groom"),
    ("adult", "f"): ("woman", "mother", "fisherwoman", "painter", "teacher", "farmer"),
    ("adult", "m"): ("man", "father", "fisherman", "musician", "baker", "farmer"),
    ("elder", "f"): ("old woman", "grandmother", "widow"),
    ("elder", "m"): ("old man", "grandfather", "widower"),
}


def find_person(text: str) -> PersonWord | None:
    """The person word of ``text`` with its gender and age group; age words in ``text`` win.

    The last person word counts ("a painting of a mother's son" shows the son).
    """
    lowered = text.lower()
    found = list(_PERSON_RE.finditer(lowered))
    if not found:
        return None
    person = PERSONS[found[-1].group(1)]
    before = lowered[: found[-1].start()]
    years = _years(before)
    if years is not None:
        return PersonWord(person.word, person.gender, years)
    age = age_from_words(before)
    if age and person.age_group in _ADULT_GROUPS:
        return PersonWord(person.word, person.gender, age)
    return person


def _years(text: str) -> str | None:
    """The age group of "a 7-year-old" or "aged 80" in ``text``, or None."""
    years = _YEARS_OLD.search(text)
    if not years:
        return None
    n = int(years.group(1) or years.group(2))
    return next((g for g in AGE_GROUPS if n <= AGE_YEARS[g][1]), "elder")


def age_from_words(text: str) -> str | None:
    """The age group an age word or "N-year-old" in ``text`` names, or None."""
    years = _years(text)
    if years:
        return years
    for pattern, group in _AGE_WORDS:
        if pattern.search(text):
            return group
    return None


def gender_code(value: str) -> str:
    """ "female"/"f"/"woman" -> "f"; ValueError says which values are accepted."""
    key = value.strip().lower()
    aliases = {"f": "f", "female": "f", "woman": "f", "women": "f"}
    aliases |= {"m": "m", "male": "m", "man": "m", "men": "m"}
    if key not in aliases:
        raise ValueError(f"gender {value!r} is not one of: female, male")
    return aliases[key]


def age_group(value: str) -> str:
    """A collection filter's age group; ValueError lists the accepted ones."""
    key = value.strip().lower().replace("_", " ").replace("-", " ")
    aliases = {"children": "child", "kid": "child", "teens": "teen", "teenager": "teen"}
    aliases |= {"young": "young adult", "adults": "adult"}
    aliases |= {"elderly": "elder", "old": "elder", "elders": "elder"}
    key = aliases.get(key, key)
    if key not in AGE_GROUPS:
        raise ValueError(f"age group {value!r} is not one of: {', '.join(AGE_GROUPS)}")
    return key
