"""The docs stay true: every setting documented, no variable that nothing reads, links that
resolve inside the repository, and Makefile targets that exist."""

from __future__ import annotations

import functools
import importlib
import os
import re
from pathlib import Path

import pytest

from ganfolk.runtime.settings import Settings, env_name

REPO = Path(__file__).resolve().parents[1]
SETTINGS_DOC = REPO / "docs" / "settings.md"
# Pages a reader of a fresh clone opens; each must make sense without anything beside it.
PAGES = sorted(
    [
        REPO / "README.md",
        *(REPO / "docs").glob("*.md"),
        *(REPO / "services").glob("*/README.md"),
        REPO / "tests" / "data" / "golden" / "README.md",
    ]
)
VARIABLE = re.compile(r"GANFOLK_[A-Z0-9_]+")
# Where variables are read: code, scripts and deployment files (not the docs themselves).
SOURCE_DIRS = ("ganfolk", "services", "scripts", "deploy", "k8s", "docker", "bench", "tests")
SOURCE_SUFFIXES = {".py", ".sh", ".mjs", ".yml", ".yaml", ".env", ".toml", ""}


def settings_classes() -> list[type[Settings]]:
    classes: list[type[Settings]] = [Settings]
    for config in sorted((REPO / "services").glob("*/config.py")):
        module = importlib.import_module(f"services.{config.parent.name}.config")
        classes += [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Settings) and value.__module__ == module.__name__
        ]
    return classes


def settings_variables() -> set[str]:
    return {env_name(field) for cls in settings_classes() for field in cls.model_fields}


def mentions(text: str, name: str) -> bool:
    # Whole names only: GANFOLK_X must not count as documented through GANFOLK_X_SHA256.
    return re.search(rf"(?<![A-Z0-9_]){re.escape(name)}(?![A-Z0-9_])", text) is not None


def source_variables() -> set[str]:
    names: set[str] = set()
    for top in SOURCE_DIRS:
        for path in (REPO / top).rglob("*"):
            if not path.is_file() or path.suffix not in SOURCE_SUFFIXES or path == Path(__file__):
                continue
            if "__pycache__" in path.parts or path.name.startswith("."):
                continue
            names |= set(VARIABLE.findall(path.read_text(errors="replace")))
    return names


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def github_slug(heading: str) -> str:
    # The anchor GitHub and GitLab give a heading: lower case, punctuation dropped, spaces to '-'.
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = without_code_blocks(page.read_text())
    return {github_slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M)}


@functools.cache
def repo_paths() -> frozenset[str]:
    """Every file and folder of the checkout, relative, without tool and dependency folders."""
    skip = {".git", ".venv", "node_modules", ".state", "__pycache__", ".mypy_cache", ".ruff_cache"}
    found: set[str] = set()
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in skip]
        rel = Path(root).relative_to(REPO)
        found |= {(rel / name).as_posix() for name in [*dirs, *files]}
    return frozenset(found)


def climbing_paths(text: str, folder: Path) -> list[str]:
    """Paths written with '../' anywhere in a page in ``folder``, code included, that leave the
    repository from there and name nothing inside it from any other folder either."""
    outside = []
    for mention in re.findall(r"(?<![\w./-])((?:\.\./)+[\w.-][\w./-]*)", text):
        if (folder / mention).resolve().is_relative_to(REPO):
            continue
        # Overlays quote paths relative to their own folder (../../components/...): fine when
        # the tail exists somewhere in the repository.
        tail = re.sub(r"^(\.\./)+", "", mention).rstrip("/.")
        if not any(p == tail or p.endswith("/" + tail) for p in repo_paths()):
            outside.append(mention)
    return outside


def links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", without_code_blocks(page.read_text()))
    return re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)


# ------------------------------------------------------------------------------------- settings


def test_settings_classes_are_found() -> None:
    # Guards the walk below: finding no service class would make the next test vacuous.
    names = {cls.__name__ for cls in settings_classes()}
    assert len(names) >= 1 + len(list((REPO / "services").glob("*/config.py"))), names


def test_every_setting_is_in_the_settings_reference() -> None:
    doc = SETTINGS_DOC.read_text()
    missing = sorted(name for name in settings_variables() if not mentions(doc, name))
    assert not missing, f"add these to {SETTINGS_DOC.relative_to(REPO)}: {', '.join(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_documented_variables_are_read_somewhere(page: Path) -> None:
    known = settings_variables() | source_variables()
    unknown = []
    for name in sorted(set(VARIABLE.findall(page.read_text()))):
        if name.endswith("_"):
            # A family written with a placeholder, e.g. GANFOLK_COORDINATOR_TIMEOUT_<STAGE>_S.
            if not any(k.startswith(name) for k in known):
                unknown.append(name)
        elif name not in known:
            unknown.append(name)
    assert not unknown, f"{page.relative_to(REPO)} names variables nothing reads: {', '.join(unknown)}"


# ---------------------------------------------------------------------------------------- links


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_pages_link_only_inside_the_repository(page: Path) -> None:
    outside = climbing_paths(page.read_text(), page.parent)
    assert not outside, f"{page.relative_to(REPO)} points outside the repository: {outside}"
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(REPO) or not resolved.exists():
            broken.append(target)
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


def test_paths_outside_the_repository_are_caught() -> None:
    text = (
        "`../../sibling/BRIEF.md`, [x](../../sibling/golden/), `../../components/hpa-cpu`, [r](../README.md)"
    )
    assert climbing_paths(text, REPO / "docs") == ["../../sibling/BRIEF.md", "../../sibling/golden/"]


def test_link_checker_sees_links() -> None:
    # The README links the architecture page; a regex that matched nothing would pass vacuously.
    assert "docs/architecture.md" in links(REPO / "README.md")


def test_slugs_match_the_code_hosts() -> None:
    assert github_slug("Scaling a GPU stage") == "scaling-a-gpu-stage"
    assert github_slug("The command line, scripts and deployment files") == (
        "the-command-line-scripts-and-deployment-files"
    )
    assert github_slug("`make demo`: what runs") == "make-demo-what-runs"
    assert github_slug("GANFOLK_STATE_DIR and friends") == "ganfolk_state_dir-and-friends"


# ------------------------------------------------------------------------------------- Makefile


def make_rules() -> dict[str, str]:
    """Target -> its recipe (the tab-indented lines below it)."""
    rules: dict[str, str] = {}
    current = None
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([a-z][a-z0-9-]*):(?!=)", line)
        if match:
            current = match.group(1)
            rules[current] = ""
        elif line.startswith("\t") and current:
            rules[current] += line.strip() + "\n"
        elif line.strip() and not line.startswith("#"):
            current = None
    return rules


def test_every_phony_target_has_a_rule() -> None:
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, flags=re.M)
    assert phony
    rules = make_rules()
    missing = [t for t in phony.group(1).split() if t not in rules]
    assert not missing, f".PHONY names targets without a rule: {missing}"
    assert {"typecheck", "test-fast"} <= set(rules)


def test_recipes_run_scripts_that_exist() -> None:
    for target, recipe in make_rules().items():
        for script in re.findall(r"\b(scripts/[\w./-]+)", recipe):
            assert (REPO / script).is_file(), f"make {target} runs {script}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_make_targets_named_in_docs_exist(page: Path) -> None:
    rules = make_rules()
    # In code spans and command lines only: prose may "make a portrait".
    named = set(re.findall(r"(?:`|^)make ([a-z][a-z0-9-]*)", page.read_text(), flags=re.M))
    assert named <= set(rules), f"{page.relative_to(REPO)} names make targets that do not exist"
