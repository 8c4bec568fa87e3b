"""First and last names per nationality for the template writer.

Real per-country name data comes from the ``names-dataset`` package (the most common
first names by gender and last names of 105 countries). It takes about 2 GB and 15 s to
load, so it is loaded once, lazily, on the first template name. Nationalities it lacks
(and installs without it) use the curated table in ``core.NAMES``.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

ALPHA2 = {
    "Turkish": "TR", "Iranian": "IR", "Lebanese": "LB", "Egyptian": "EG", "Moroccan": "MA",
    "Kenyan": "KE", "Nigerian": "NG", "Ghanaian": "GH", "Ethiopian": "ET", "Senegalese": "SN",
    "Indian": "IN", "Pakistani": "PK", "Bangladeshi": "BD", "Nepalese": "NP", "Chinese": "CN",
    "Japanese": "JP", "Korean": "KR", "Vietnamese": "VN", "Indonesian": "ID", "Filipino": "PH",
    "Thai": "TH", "Mongolian": "MN", "Brazilian": "BR", "Mexican": "MX", "Peruvian": "PE",
    "Colombian": "CO", "Argentinian": "AR", "Jamaican": "JM", "Haitian": "HT", "French": "FR",
    "Italian": "IT", "Spanish": "ES", "Polish": "PL", "Swedish": "SE", "Greek": "GR",
    "Russian": "RU", "Samoan": "WS", "Fijian": "FJ",
}  # fmt: skip

Pools = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
_LOAD_LOCK = threading.Lock()


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


def _clean(names: Any) -> tuple[str, ...]:
    """Single capitalised alphabetic words only (the dataset has initials and junk)."""
    return tuple(
        n for n in names or () if isinstance(n, str) and n.isalpha() and len(n) > 1 and n[0].isupper()
    )


class NameSource:
    """names-dataset's top names per country, or None where it has none."""

    def __init__(self, enabled: bool = True, top: int = 30) -> None:
        self.enabled = enabled
        self.top = top
        self._cache: dict[str, Pools | None] = {}

    @property
    def name(self) -> str:
        return "names-dataset" if self.enabled and self._load() is not None else "curated table"

    def _load(self) -> Any:
        if not self.enabled:
            return None
        with _LOAD_LOCK:
            dataset = _name_dataset()
        if dataset is None:
            self.enabled = False
        return dataset

    def pools(self, nationality: str) -> Pools | None:
        """(male first names, female first names, last names), each non-empty, or None."""
        code = ALPHA2.get(nationality)
        if code is None or not self.enabled:
            return None
        if nationality not in self._cache:
            dataset = self._load()
            result = None
            if dataset is not None:
                first = dataset.get_top_names(n=self.top, country_alpha2=code).get(code, {})
                last = dataset.get_top_names(n=self.top, use_first_names=False, country_alpha2=code).get(
                    code, []
                )
                pools = (_clean(first.get("M")), _clean(first.get("F")), _clean(last))
                result = pools if all(pools) else None
            self._cache[nationality] = result
        return self._cache[nationality]
