"""Countries, their demonyms and world regions: every country of ``names-dataset`` and a few more.

A prompt or a description names a person's nationality with a demonym ("English", "Québécois",
"South African"), a country ("from Bulgaria") or a regional word ("Andalusian", "Yoruba"); each
maps to one ISO 3166 alpha-2 code, the key of ``names-dataset``'s per-country names. Regions keep
collections balanced and let users filter by "South America" or "Nordic" instead of listing
countries. Matching ignores case and accents, except for the demonyms that are also common
English words ("Pole", "Turk"), which only count when capitalised.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

# code | country names | demonyms, the first is the one prompts use | region ("\\" continues a line).
# The 105 countries of names-dataset, then the ones only the curated table in core.NAMES covers.
_TABLE = """
AE | United Arab Emirates, UAE, the Emirates | Emirati | Middle East
AF | Afghanistan | Afghan, Pashtun | Central Asia and the Caucasus
AL | Albania | Albanian | Southern Europe
AO | Angola | Angolan | Sub-Saharan Africa
AR | Argentina | Argentinian, Argentine | South America
AT | Austria | Austrian, Viennese, Tyrolean | Western Europe
AZ | Azerbaijan | Azerbaijani, Azeri | Central Asia and the Caucasus
BD | Bangladesh | Bangladeshi, Bengali | South Asia
BE | Belgium | Belgian, Flemish, Walloon | Western Europe
BF | Burkina Faso | Burkinabé, Burkinabe | Sub-Saharan Africa
BG | Bulgaria | Bulgarian | Eastern Europe
BH | Bahrain | Bahraini | Middle East
BI | Burundi | Burundian | Sub-Saharan Africa
BN | Brunei | Bruneian | Southeast Asia
BO | Bolivia | Bolivian, Aymara | South America
BR | Brazil | Brazilian, Carioca, Paulista | South America
BW | Botswana | Motswana, Botswanan, Batswana | Sub-Saharan Africa
CA | Canada, Quebec, Québec | Canadian, Québécois, Quebecer, Québécoise | North America
CH | Switzerland | Swiss | Western Europe
CL | Chile | Chilean | South America
CM | Cameroon | Cameroonian | Sub-Saharan Africa
CN | China | Chinese, Cantonese, Han Chinese | East Asia
CO | Colombia | Colombian | South America
CR | Costa Rica | Costa Rican, Tico | Central America and the Caribbean
CY | Cyprus | Cypriot | Southern Europe
CZ | Czechia, Czech Republic, Bohemia | Czech, Bohemian, Moravian | Eastern Europe
DE | Germany | German, Bavarian, Berliner, Saxon | Western Europe
DJ | Djibouti | Djiboutian | Sub-Saharan Africa
DK | Denmark | Danish, Dane | Northern Europe
DZ | Algeria | Algerian, Kabyle | North Africa
EC | Ecuador | Ecuadorian, Ecuadorean | South America
EE | Estonia | Estonian | Northern Europe
EG | Egypt | Egyptian | North Africa
ES | Spain | Spanish, Spaniard, Catalan, Andalusian, Basque, Galician, Castilian | Southern Europe
ET | Ethiopia | Ethiopian, Amhara, Oromo | Sub-Saharan Africa
FI | Finland | Finnish, Finn | Northern Europe
FJ | Fiji | Fijian | Oceania
FR | France, Brittany, Provence | French, Parisian, Breton, Provençal, Corsican, Frenchman, \
    Frenchwoman | Western Europe
GB | United Kingdom, UK, Great Britain, Britain, England, Scotland, Wales, Northern Ireland | British, \
    English, Scottish, Scots, Welsh, Briton, Cornish, Londoner, Englishman, Englishwoman, Scotsman, \
    Scotswoman | Western Europe
GE | Georgia | Georgian | Central Asia and the Caucasus
GH | Ghana | Ghanaian, Ashanti, Akan | Sub-Saharan Africa
GR | Greece | Greek, Cretan, Hellenic | Southern Europe
GT | Guatemala | Guatemalan, Mayan | Central America and the Caribbean
HK | Hong Kong | Hongkonger, Hong Konger, Hong Kongese | East Asia
HN | Honduras | Honduran | Central America and the Caribbean
HR | Croatia | Croatian, Croat, Dalmatian | Southern Europe
HT | Haiti | Haitian | Central America and the Caribbean
HU | Hungary | Hungarian, Magyar | Eastern Europe
ID | Indonesia, Java, Bali | Indonesian, Javanese, Balinese, Sundanese | Southeast Asia
IE | Ireland, Éire | Irish, Irishman, Irishwoman | Western Europe
IL | Israel | Israeli | Middle East
IN | India | Indian, Punjabi, Tamil, Gujarati, Marathi, Keralite, Rajasthani | South Asia
IQ | Iraq | Iraqi | Middle East
IR | Iran, Persia | Iranian, Persian | Middle East
IS | Iceland | Icelandic, Icelander | Northern Europe
IT | Italy, Sicily, Sardinia, Tuscany | Italian, Sicilian, Sardinian, Neapolitan, Venetian, Tuscan, \
    Milanese, Roman | Southern Europe
JM | Jamaica | Jamaican | Central America and the Caribbean
JO | Jordan | Jordanian | Middle East
JP | Japan | Japanese, Okinawan | East Asia
KH | Cambodia | Cambodian, Khmer | Southeast Asia
KR | South Korea, Korea | Korean, South Korean | East Asia
KW | Kuwait | Kuwaiti | Middle East
KZ | Kazakhstan | Kazakh, Kazakhstani | Central Asia and the Caucasus
LB | Lebanon | Lebanese | Middle East
LT | Lithuania | Lithuanian | Northern Europe
LU | Luxembourg | Luxembourgish, Luxembourger | Western Europe
LY | Libya | Libyan | North Africa
MA | Morocco | Moroccan, Berber, Amazigh | North Africa
MD | Moldova | Moldovan | Eastern Europe
MO | Macao, Macau | Macanese | East Asia
MT | Malta | Maltese | Southern Europe
MU | Mauritius | Mauritian | Sub-Saharan Africa
MV | Maldives | Maldivian | South Asia
MX | Mexico | Mexican, Oaxacan, Yucatecan | Central America and the Caribbean
MY | Malaysia | Malaysian, Malay | Southeast Asia
NA | Namibia | Namibian, Herero | Sub-Saharan Africa
NG | Nigeria | Nigerian, Yoruba, Igbo, Hausa | Sub-Saharan Africa
NL | Netherlands, Holland | Dutch, Dutchman, Dutchwoman, Frisian, Hollander | Western Europe
NO | Norway | Norwegian | Northern Europe
OM | Oman | Omani | Middle East
PA | Panama | Panamanian | Central America and the Caribbean
PE | Peru | Peruvian, Quechua, Andean | South America
PH | Philippines | Filipino, Filipina, Philippine, Tagalog | Southeast Asia
PL | Poland | Polish, Pole | Eastern Europe
PR | Puerto Rico | Puerto Rican, Boricua | Central America and the Caribbean
PS | Palestine | Palestinian | Middle East
PT | Portugal | Portuguese, Lisboan, Azorean | Southern Europe
QA | Qatar | Qatari | Middle East
RS | Serbia | Serbian, Serb | Southern Europe
RU | Russia, Russian Federation, Siberia | Russian, Muscovite, Siberian | Eastern Europe
SA | Saudi Arabia | Saudi, Saudi Arabian | Middle East
SD | Sudan | Sudanese, Nubian | North Africa
SE | Sweden | Swedish, Swede | Northern Europe
SG | Singapore | Singaporean | Southeast Asia
SI | Slovenia | Slovenian, Slovene | Southern Europe
SV | El Salvador | Salvadoran, Salvadorian, Salvadorean | Central America and the Caribbean
SY | Syria | Syrian | Middle East
TM | Turkmenistan | Turkmen | Central Asia and the Caucasus
TN | Tunisia | Tunisian | North Africa
TR | Turkey, Türkiye, Anatolia | Turkish, Turk, Anatolian | Middle East
TW | Taiwan | Taiwanese | East Asia
US | United States, USA, America | American, Texan, Californian, New Yorker, Bostonian | North America
UY | Uruguay | Uruguayan | South America
YE | Yemen | Yemeni | Middle East
ZA | South Africa | South African, Afrikaner, Zulu, Xhosa | Sub-Saharan Africa
KE | Kenya | Kenyan, Maasai, Kikuyu | Sub-Saharan Africa
SN | Senegal | Senegalese, Wolof | Sub-Saharan Africa
NP | Nepal | Nepalese, Nepali, Sherpa | South Asia
PK | Pakistan | Pakistani | South Asia
VN | Vietnam, Viet Nam | Vietnamese | Southeast Asia
TH | Thailand, Siam | Thai, Siamese | Southeast Asia
MN | Mongolia | Mongolian | Central Asia and the Caucasus
WS | Samoa | Samoan | Oceania
"""
# Demonyms that are also ordinary English words: only "a young Pole", never "a pole".
_CAPITALISED_ONLY = frozenset({"pole", "turk", "finn", "dane", "swede", "roman", "malay", "tico", "saxon"})

# Words that name several regions or countries; also accepted as collection filters.
_GROUPS = """
Europe, European | Western Europe, Northern Europe, Southern Europe, Eastern Europe
Scandinavia, Scandinavian, Nordic | DK, NO, SE, IS, FI
Slavic, Slav | BG, CZ, PL, RU, RS, HR, SI
Balkan, Balkans | AL, BG, HR, RS, SI, GR
Baltic | EE, LT
Mediterranean | ES, IT, GR, MT, CY, LB, TN
Celtic, Gaelic | IE, GB
Africa, African | North Africa, Sub-Saharan Africa
Asia, Asian | South Asia, East Asia, Southeast Asia, Central Asia and the Caucasus
Arab, Arabic, Arabian | AE, BH, IQ, JO, KW, LB, OM, PS, QA, SA, SY, YE, DZ, EG, LY, MA, SD, TN
Middle Eastern, Near Eastern | Middle East
North African, Maghrebi | North Africa
East Asian | East Asia
Southeast Asian | Southeast Asia
South Asian, Desi | South Asia
Central Asian | Central Asia and the Caucasus
Latin America, Latin American, Hispanic, Latino, Latina | Central America and the Caribbean, South America
South American | South America
Central American | CR, GT, HN, PA, SV
Caribbean, West Indian | HT, JM, PR
North American | North America
Polynesian, Pacific Islander, Melanesian | Oceania
"""


@dataclass(frozen=True)
class Country:
    code: str  # ISO 3166 alpha-2, names-dataset's key
    name: str
    demonym: str  # as prompts write it: "Bulgarian"
    region: str
    aliases: tuple[str, ...]  # every other country name and demonym
    demonyms: tuple[str, ...]  # every demonym, the prompt's first


def fold(text: str) -> str:
    """Lower case without accents: "Québécois" -> "quebecois"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _load() -> dict[str, Country]:
    out: dict[str, Country] = {}
    for line in _TABLE.replace("\\\n", "").strip().splitlines():
        code, names, demonyms, region = (field.strip() for field in line.split("|"))
        names_, demonyms_ = _split(names), _split(demonyms)
        aliases = tuple(names_[1:] + demonyms_[1:])
        out[code] = Country(code, names_[0], demonyms_[0], region, aliases, tuple(demonyms_))
    return out


COUNTRIES: dict[str, Country] = _load()
REGIONS: dict[str, tuple[str, ...]] = {}
for _country in COUNTRIES.values():
    REGIONS[_country.region] = (*REGIONS.get(_country.region, ()), _country.code)
BY_DEMONYM: dict[str, Country] = {c.demonym: c for c in COUNTRIES.values()}


def _groups() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for line in _GROUPS.strip().splitlines():
        words, members = (field.strip() for field in line.split("|"))
        members_: list[str] = []
        for member in _split(members):
            members_.extend(REGIONS.get(member, (member,)))
        unknown = [c for c in members_ if c not in COUNTRIES]
        assert not unknown, f"region group {words!r} lists unknown countries {unknown}"
        for word in _split(words):
            out[fold(word)] = tuple(dict.fromkeys(members_))
    for region, codes in REGIONS.items():
        out[fold(region)] = codes
    return out


GROUPS: dict[str, tuple[str, ...]] = _groups()


@functools.cache
def _country_words() -> tuple[re.Pattern[str], re.Pattern[str], dict[str, tuple[str, str]]]:
    """(folded pattern, capitalised-only pattern, folded word -> (code, spelling)); longest first."""
    words: dict[str, tuple[str, str]] = {}
    for country in COUNTRIES.values():
        for word in (country.demonym, country.name, *country.aliases):
            words.setdefault(fold(word), (country.code, word))
    plain = sorted((w for w in words if w not in _CAPITALISED_ONLY), key=len, reverse=True)
    folded = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, plain)) + r")(?![\w-])")
    capitalised = re.compile(r"\b(" + "|".join(w.capitalize() for w in sorted(_CAPITALISED_ONLY)) + r")s?\b")
    return folded, capitalised, words


def is_country_word(word: str) -> bool:
    """Whether ``word`` is a country's name or demonym ("Brunei", "Cambodian")."""
    return fold(word) in _country_words()[2]


@functools.cache
def _group_phrases() -> re.Pattern[str]:
    """Regional phrases that contain a country word ("Latin American", "West Indian")."""
    phrases = sorted((w for w in GROUPS if " " in w), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, phrases)) + r")(?![\w-])")


def find_country(text: str) -> tuple[Country, str] | None:
    """The first country named in ``text`` and the word that named it, or None.

    "a Latin American girl" names a region, not the United States: regional phrases are
    blanked out before countries are looked for.
    """
    folded_pattern, capitalised, words = _country_words()
    folded = _group_phrases().sub(lambda m: " " * len(m.group(0)), fold(text))
    hits: list[tuple[int, str]] = []
    m = folded_pattern.search(folded)
    if m:
        hits.append((m.start(), m.group(1)))
    c = capitalised.search(text)
    if c:
        hits.append((c.start(), fold(c.group(1))))
    if not hits:
        return None
    code, spelling = words[min(hits)[1]]
    return COUNTRIES[code], spelling


def find_group(text: str) -> tuple[tuple[str, ...], str] | None:
    """Countries of the first regional word in ``text`` ("African", "Nordic") and the word."""
    folded = fold(text)
    for word in sorted(GROUPS, key=len, reverse=True):
        if re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", folded):
            return GROUPS[word], word
    return None


def resolve(value: str) -> tuple[str, ...]:
    """Country codes a collection filter value names: a code, a country, a demonym or a region.

    ValueError says what would be accepted instead.
    """
    text = value.strip()
    if text.upper() in COUNTRIES and len(text) == 2:
        return (text.upper(),)
    if fold(text) in GROUPS:
        return GROUPS[fold(text)]
    _, _, words = _country_words()
    if fold(text) in words:
        return (words[fold(text)][0],)
    raise ValueError(
        f"{value!r} is not a known nationality, country or region; use a demonym such as 'Bulgarian', "
        f"a country such as 'Bulgaria', an ISO code such as 'BG', or a region: {', '.join(sorted(REGIONS))}"
    )


def resolve_all(values: Iterable[str]) -> tuple[str, ...]:
    """Every country the values name, in order, without repeats."""
    codes: list[str] = []
    for value in values:
        codes.extend(resolve(value))
    return tuple(dict.fromkeys(codes))
