"""Licence strings to SPDX-like ids, licence families, and the allow-list test.

Sources write licences as deed URLs (Open Images: ``https://creativecommons.org/licenses/by/2.0/``)
or as text (``CC BY-SA 4.0``, ``cc-by-4.0``, ``Public domain``). Every record stores the id
:func:`normalise_licence` gives: the SPDX identifier where one exists (``CC-BY-2.0``,
``CC-BY-SA-4.0``, ``CC0-1.0``), ``CC-BY`` and the like when no version is given, and
``public-domain`` for the Public Domain Mark and plain "public domain", which SPDX has no id
for. A string that is none of these is unknown: :func:`normalise_licence` returns None and the
item is skipped with the string in the reason, never guessed.
"""

from __future__ import annotations

import re

__all__ = [
    "DEFAULT_ALLOWED",
    "PUBLIC_DOMAIN",
    "family",
    "is_allowed",
    "licence_url",
    "normalise_licence",
    "parse_allow_list",
]

PUBLIC_DOMAIN = "public-domain"
# CC's licence elements, in the order SPDX writes them.
_CC_KINDS = ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd")
_FAMILIES = {f"CC-{k.upper()}" for k in _CC_KINDS} | {"CC0", PUBLIC_DOMAIN}
# Licences that let a trained model's outputs be released under CC BY-SA with attribution,
# which is how the article publishes them.
DEFAULT_ALLOWED = ("CC0", PUBLIC_DOMAIN, "CC-BY", "CC-BY-SA")

_CC_URL = re.compile(
    r"creativecommons\.org/licenses/(?P<kind>by(?:-nc)?(?:-sa|-nd)?)/(?P<version>\d(?:\.\d)?)",
    re.IGNORECASE,
)
_CC0_URL = re.compile(r"creativecommons\.org/publicdomain/zero/(?P<version>\d\.\d)", re.IGNORECASE)
_PDM_URL = re.compile(r"creativecommons\.org/publicdomain/mark/", re.IGNORECASE)
_CC_TEXT = re.compile(
    r"^(?:cc|creative\s*commons)[\s_-]*(?P<kind>by(?:[\s_-]*nc)?(?:[\s_-]*(?:sa|nd))?)"
    r"(?:[\s_-]*(?P<version>\d(?:\.\d)?)(?:[\s_-]*(?:generic|international|unported))?)?$",
    re.IGNORECASE,
)
_CC0_TEXT = re.compile(r"^cc[\s_-]*(?:0|zero)(?:[\s_-]*(?P<version>\d\.\d))?$", re.IGNORECASE)
_PD_TEXT = re.compile(r"^(?:public[\s_-]*domain(?:[\s_-]*mark(?:[\s_-]*1\.0)?)?|pd|pdm(?:-1\.0)?)$", re.I)


def _version(v: str | None) -> str:
    if not v:
        return ""
    return v if "." in v else f"{v}.0"


def normalise_licence(text: str | None) -> str | None:
    """The SPDX-like id of a licence URL or name, or None when it is not one we know."""
    if not text:
        return None
    s = text.strip()
    if m := _CC_URL.search(s):
        return f"CC-{m['kind'].upper()}-{_version(m['version'])}"
    if m := _CC0_URL.search(s):
        return f"CC0-{m['version']}"
    if _PDM_URL.search(s):
        return PUBLIC_DOMAIN
    if "://" in s:
        return None
    if m := _CC0_TEXT.match(s):
        return f"CC0-{m['version'] or '1.0'}"
    if _PD_TEXT.match(s):
        return PUBLIC_DOMAIN
    if m := _CC_TEXT.match(s):
        kind = "-".join(re.findall(r"by|nc|sa|nd", m["kind"].lower()))
        if kind not in _CC_KINDS:
            return None
        version = _version(m["version"])
        return f"CC-{kind.upper()}" + (f"-{version}" if version else "")
    return None


def family(licence_id: str) -> str:
    """``CC-BY-SA-4.0`` -> ``CC-BY-SA``; ``CC0-1.0`` -> ``CC0``; ``public-domain`` unchanged."""
    if licence_id.startswith("CC0"):
        return "CC0"
    return re.sub(r"-\d\.\d$", "", licence_id)


def parse_allow_list(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Allow-list entries (families like ``cc-by`` or exact ids like ``CC-BY-2.0``), normalised.

    Raises ValueError naming an entry that is no licence.
    """
    out = []
    for name in names:
        norm = normalise_licence(name)
        if norm is None:
            raise ValueError(
                f"unknown licence {name!r} in the allow-list; use a family ({', '.join(sorted(_FAMILIES))}, "
                "any case) or an id such as CC-BY-SA-4.0"
            )
        out.append(norm)
    return tuple(out)


def is_allowed(licence_id: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``licence_id`` is in ``allowed``: an entry without a version allows the whole family."""
    return any(licence_id == a or (a in _FAMILIES and family(licence_id) == a) for a in allowed)


def licence_url(licence_id: str) -> str:
    """The deed URL of a normalised licence id ("" when it has none)."""
    if licence_id == PUBLIC_DOMAIN:
        return "https://creativecommons.org/publicdomain/mark/1.0/"
    if licence_id.startswith("CC0"):
        return f"https://creativecommons.org/publicdomain/zero/{licence_id[4:] or '1.0'}/"
    m = re.match(r"^CC-(?P<kind>[A-Z-]+?)(?:-(?P<version>\d\.\d))?$", licence_id)
    if not m:
        return ""
    kind = m["kind"].lower()
    return f"https://creativecommons.org/licenses/{kind}/{m['version'] or '4.0'}/"
