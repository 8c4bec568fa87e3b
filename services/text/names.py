"""First and last names per country, and the check that a name fits a person's country and gender.

Real per-country name data comes from the ``names-dataset`` package (first names with their
gender shares and last names, ranked in each of 105 countries). It takes about 2 GB and 15 s to
load, so it is loaded once per process, lazily, on the first name that needs it. Countries it
lacks, and installs without it, use the curated table below.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any

from services.text.countries import is_country_word
from services.text.persons import PERSONS

log = logging.getLogger(__name__)

# alpha-2: male first names | female first names | surnames. Used where names-dataset has no data.
_CURATED = """
    TR: Emre Burak Mert | Elif Zeynep Defne | Yilmaz Kaya Demirci
    IR: Dariush Kaveh Arash | Shirin Parisa Laleh | Rostami Karimi Farahani
    LB: Karim Elie Nadim | Rania Maya Lina | Haddad Khoury Nassar
    EG: Omar Tarek Youssef | Nour Salma Hana | Mansour Saleh Farouk
    MA: Yassine Hamza Anas | Imane Salma Houda | Benali Alaoui Tazi
    KE: Otieno Kamau Kipchoge | Achieng Wanjiru Njeri | Mwangi Odhiambo Wekesa
    NG: Chinedu Tunde Emeka | Ngozi Adaeze Folake | Okafor Adeyemi Eze
    GH: Kwame Kofi Yaw | Ama Akosua Efua | Mensah Boateng Owusu
    ET: Dawit Yonas Tesfaye | Selam Hiwot Meron | Bekele Tadesse Girma
    SN: Moussa Ousmane Cheikh | Awa Fatou Aminata | Diallo Ndiaye Faye
    IN: Arjun Rohan Vikram | Ananya Priya Meera | Sharma Iyer Reddy
    PK: Bilal Usman Faisal | Ayesha Sana Hira | Qureshi Malik Chaudhry
    BD: Rafiq Tanvir Arif | Nusrat Farzana Sharmin | Rahman Hossain Akter
    NP: Bikash Suman Prakash | Sita Anjali Pooja | Shrestha Gurung Thapa
    CN: Wei Jian Hao | Mei Lian Xiu | Wang Zhou Lin
    JP: Haruto Ren Sota | Yui Aoi Hana | Tanaka Suzuki Watanabe
    KR: Minjun Jiho Seojun | Jiwoo Seoyeon Hayun | Kim Park Choi
    VN: Minh Tuan Quang | Linh Thao Mai | Nguyen Tran Pham
    ID: Budi Agus Rizky | Siti Dewi Putri | Santoso Wijaya Saputra
    PH: Jose Mark Paolo | Maria Angel Joy | Santos Reyes Bautista
    TH: Somchai Anan Krit | Malee Siriporn Ploy | Saetang Wongsa Chaiyasit
    MN: Bat Ganbold Temuulen | Saraa Oyun Nomin | Batbayar Enkhbat Ganzorig
    BR: Lucas Gabriel Thiago | Sofia Beatriz Larissa | Santos Oliveira Souza
    MX: Diego Mateo Santiago | Valeria Ximena Camila | Hernandez Ramirez Flores
    PE: Jorge Luis Renzo | Rosa Milagros Lucia | Quispe Mamani Huaman
    CO: Andres Camilo Julian | Daniela Mariana Paula | Restrepo Cardona Rojas
    AR: Facundo Martin Nicolas | Agustina Florencia Julieta | Gonzalez Ferreyra Acosta
    JM: Andre Damion Marlon | Shanice Kimone Tanisha | Campbell Brown Thompson
    HT: Jean Wilson Frantz | Nadege Fabienne Mirlande | Pierre Joseph Charles
    FR: Louis Hugo Theo | Camille Chloe Manon | Martin Bernard Moreau
    IT: Matteo Lorenzo Marco | Giulia Chiara Francesca | Rossi Esposito Ricci
    ES: Pablo Alvaro Sergio | Lucia Carmen Elena | Garcia Fernandez Lopez
    PL: Jakub Kacper Piotr | Zofia Maja Kasia | Nowak Kowalczyk Wozniak
    SE: Erik Lars Oskar | Astrid Elsa Ingrid | Lindqvist Berg Nilsson
    GR: Nikos Giorgos Dimitris | Eleni Katerina Sofia | Papadopoulos Nikolaidis Georgiou
    RU: Dmitri Alexei Ivan | Anastasia Olga Tatiana | Ivanov Smirnov Volkov
    WS: Sione Tavita Filipo | Malia Leilani Losa | Tuilagi Faleolo Leota
    FJ: Josefa Semi Viliame | Adi Litia Mere | Naivalu Tuilevu Ravula
"""
Pools = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
CURATED: dict[str, Pools] = {
    code.strip(): tuple(tuple(group.split()) for group in rest.split("|"))  # type: ignore[misc]
    for code, rest in (line.split(":") for line in _CURATED.strip().splitlines())
}
# A name's gender counts when this share of its bearers has it.
GENDER_SHARE = 0.5
# Words a model echoes instead of a name.
NOT_NAMES: frozenset[str] = frozenset(
    "name first last the a an her his their she he it is create named called sure here mr mrs ms miss dr "
    "girl boy man woman painter artist person".split()
)
# Abbreviations and particles the dataset lists as names.
_ABBREVIATIONS = frozenset("md mohd muhd hj hjh om oum ben bin binti abu ibn".split())
# Words no template name may be: the parser's non-names, abbreviations, and person words ("Man").
_REFUSED = NOT_NAMES | _ABBREVIATIONS | frozenset(PERSONS)
_LOAD_LOCK = threading.Lock()
_GENDER_WORD = {"m": "male", "f": "female"}


@functools.cache
def _name_dataset() -> Any:
    """The dataset, loaded once per process however many cores are built (2 GB, ~15 s)."""
    try:
        from names_dataset import NameDataset
    except ImportError:
        log.warning("names-dataset is not installed: template names come from the curated table")
        return None
    log.info("loading names-dataset (about 2 GB, once)")
    return NameDataset()


def _usable(name: str) -> bool:
    """Single capitalised words in Latin script only: the dataset has initials and junk, and
    a name in Cyrillic or Arabic script would stand out in an English backstory."""
    if not (name.isalpha() and len(name) > 1 and name[0].isupper() and not name.isupper()):
        return False
    if not _VOWEL.search(name) or name.lower() in _REFUSED or is_country_word(name):
        return False  # "Brunei", "Man": what users typed in the name field, or a word of a prompt
    return all(c.isascii() or "LATIN" in unicodedata.name(c, "") for c in name)


_VOWEL = re.compile(r"[aeiouyAEIOUY]|[^\x00-\x7f]")  # "Hm", "Bn" are initials; "Hélène" is fine


def _majority_gender(info: dict[str, Any]) -> str:
    shares = info.get("gender") or {}
    male, female = shares.get("M") or 0.0, shares.get("F") or 0.0
    if male >= GENDER_SHARE and male > female:
        return "m"
    if female >= GENDER_SHARE and female > male:
        return "f"
    return ""


@functools.cache
def _top_pools(top: int) -> dict[str, Pools]:
    """Every country's ``top`` male, female and last names in one pass over the dataset.

    names-dataset's own ``get_top_names`` scans all 700,000 first names per call; one pass for
    every country costs about the same as two of those calls.
    """
    dataset = _name_dataset()
    firsts: dict[tuple[str, str], list[tuple[int, str]]] = {}
    lasts: dict[str, list[tuple[int, str]]] = {}
    for name, info in dataset.first_names.items():
        gender = _majority_gender(info)
        if not gender or not _usable(name):
            continue
        for code, rank in info["rank"].items():
            if rank is not None:
                firsts.setdefault((code, gender), []).append((rank, name))
    for name, info in dataset.last_names.items():
        if not _usable(name):
            continue
        for code, rank in info["rank"].items():
            if rank is not None:
                lasts.setdefault(code, []).append((rank, name))

    def best(ranked: list[tuple[int, str]]) -> tuple[str, ...]:
        return tuple(name for _, name in sorted(ranked)[:top])

    out: dict[str, Pools] = {}
    for code in dataset.country_codes:
        males, females = best(firsts.get((code, "m"), [])), best(firsts.get((code, "f"), []))
        pools = (males, females, best(lasts.get(code, [])))
        if all(pools):
            out[code] = pools
    return out


@dataclass(frozen=True)
class Fit:
    """How a name fits a person's country and gender; ``reason`` is None when it does."""

    reason: str | None
    checked: bool  # False when there was no data to check against


class NameSource:
    """names-dataset's names per country (the curated table where it has none) and the fit check."""

    def __init__(self, enabled: bool = True, top: int = 30) -> None:
        self.enabled = enabled
        self.top = top

    @property
    def name(self) -> str:
        return "names-dataset" if self.dataset() is not None else "curated table"

    def dataset(self) -> Any:
        """The loaded dataset, or None when disabled or not installed."""
        if not self.enabled:
            return None
        with _LOAD_LOCK:
            dataset = _name_dataset()
        if dataset is None:
            self.enabled = False
        return dataset

    def has_data(self, code: str) -> bool:
        """Whether names for ``code`` exist without looking at the dataset's content."""
        return code in CURATED or (self.dataset() is not None and code in self.dataset().country_codes)

    def pools(self, code: str) -> Pools | None:
        """(male first names, female first names, last names) of a country, or None."""
        if self.dataset() is not None:
            with _LOAD_LOCK:
                found = _top_pools(self.top).get(code)
            if found:
                return found
        return CURATED.get(code)

    def fits(self, first: str, last: str, code: str, gender: str) -> Fit:
        """Whether ``first`` is a first name of ``code`` of ``gender`` ("" for either) and ``last``
        a surname there, as names-dataset knows them (a name counts in the ten countries where
        most of its bearers live). Unchecked when the dataset has no data for the country."""
        dataset = self.dataset()
        if dataset is None:
            return Fit(None, checked=False)
        if code not in dataset.country_codes:
            # No country data (Kenya, Senegal ...): the gender can still be checked.
            info = _lookup(dataset.first_names, first)
            if gender and info is not None and _majority_gender(info) not in (gender, ""):
                return Fit(f"{first} is not a {_GENDER_WORD[gender]} first name (names-dataset)", True)
            return Fit(None, checked=False)
        info = _lookup(dataset.first_names, first)
        if info is None or code not in info["country"]:
            return Fit(f"{first} is not a first name in {code} (names-dataset)", checked=True)
        if gender and _majority_gender(info) != gender:
            return Fit(f"{first} is not a {_GENDER_WORD[gender]} first name (names-dataset)", checked=True)
        surname = _lookup(dataset.last_names, last)
        if surname is None or code not in surname["country"]:
            return Fit(f"{last} is not a surname in {code} (names-dataset)", checked=True)
        return Fit(None, checked=True)


def _lookup(table: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The entry of ``name``; a compound ("Anne-Marie") by its first part when whole is unknown."""
    for key in (name, name.split("-")[0], name.split("'")[-1]):
        info = table.get(key.strip().title())
        if info is not None:
            return info  # type: ignore[no-any-return]
    return None
