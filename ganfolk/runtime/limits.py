"""Limits on what a job may ask for, in one place.

The coordinator checks a job's spec against these at Submit, and the services that would
otherwise reject the same input later (the text service's description, the StyleGAN
service's seeds per request, the mint service's title) take their defaults from here: a job
the coordinator accepts is never refused by a stage for a limit the coordinator could have
checked first. Deployments that change a service's limit through its setting must keep it
at least as large as the one here, or jobs fail at that stage instead of at Submit.

Nothing here imports a service.
"""

from __future__ import annotations

import re
import unicodedata

from ganfolk.runtime.errors import InvalidArgument

# Free text a person types: the portrait prompt, and who it shows (the name and backstory
# stages get the description, or the prompt's "of ..." part when it is empty).
MAX_PROMPT_CHARS = 500
MAX_DESCRIPTION_CHARS = 500
# A person's full name ("First Last"), as reserved for a collection or checked by the text service.
MAX_NAME_CHARS = 80
# The mint service's token title: the prompt and the person's name.
MAX_MINT_TITLE_CHARS = 200

# StyleGAN samples one job may draw (the default of GANFOLK_COORDINATOR_MAX_SAMPLES).
MAX_SAMPLES_PER_JOB = 10_000
# Seeds one StyleGAN request (one sample task) may ask for (GANFOLK_STYLEGAN_MAX_SEEDS).
MAX_SEEDS_PER_SAMPLE_TASK = 1000
# Sample tasks of one job: the job lists the id of every finished one, and stays small.
MAX_SAMPLE_TASKS = 256
# Ranked samples the job keeps references to.
MAX_TOP_K = 100
# Portraits of one collection.
MAX_COLLECTION = 100
# A Submit's idempotency key (hashed into the job id, and stored in the job).
MAX_IDEMPOTENCY_KEY_CHARS = 256

# Seeds travel as protobuf int64 (SeedRange.start, the text, refine and mint seeds).
INT64_MAX = 2**63 - 1

# Job ids the coordinator hands out: "job-" and 24 lower-case hex digits (a uuid's or an
# idempotency key's hash). Anything else names no job, and must not reach NATS, where
# ".", "*", ">" and spaces in a key or subject mean something else.
JOB_ID = re.compile(r"job-[0-9a-f]{24}")

# Unicode categories a single line of text may not contain: control characters (TAB, NUL,
# newlines, DEL, C1) and the line and paragraph separators, which break the one-line prompts,
# names and titles every stage builds from it.
_NOT_IN_A_LINE = frozenset({"Cc", "Zl", "Zp"})


def bad_characters(text: str) -> list[str]:
    """The characters of ``text`` that a one-line text field may not hold, each once, in order."""
    return list(dict.fromkeys(c for c in text if unicodedata.category(c) in _NOT_IN_A_LINE))


def check_line(value: str, field: str, limit: int) -> str:
    """A one-line text field, stripped: at most ``limit`` characters, no control characters.

    An empty field stays empty (the caller decides whether it is required); a field of only
    spaces is refused, since it would read as set but say nothing. InvalidArgument says
    what to fix.
    """
    text = value.strip()
    if value and not text:
        raise InvalidArgument(f"{field} is only whitespace: leave it empty or write some words")
    if len(text) > limit:
        raise InvalidArgument(f"{field} is {len(text):,} characters; keep it to {limit:,}")
    bad = bad_characters(text)
    if bad:
        shown = ", ".join(_describe(c) for c in bad[:5])
        raise InvalidArgument(
            f"{field} contains characters a one-line text may not hold ({shown}); remove them"
        )
    return text


def _describe(c: str) -> str:
    return f"U+{ord(c):04X} {unicodedata.name(c, repr(c))}" if c not in "\t\n\r\x00" else repr(c)


def check_job_id(job_id: str) -> str:
    """``job_id`` when it is one the coordinator could have handed out; InvalidArgument otherwise."""
    if not job_id:
        raise InvalidArgument("job_id is required")
    if not JOB_ID.fullmatch(job_id):
        raise InvalidArgument(f"job_id {job_id[:40]!r} is not a job id: 'job-' and 24 lower-case hex digits")
    return job_id


def fit_title(text: str, suffix: str, limit: int = MAX_MINT_TITLE_CHARS) -> str:
    """``text`` + ``suffix`` in at most ``limit`` characters: ``text`` is cut at a word
    boundary with an ellipsis when the two do not fit (the suffix, a person's name, stays)."""
    if len(text) + len(suffix) <= limit:
        return text + suffix
    room = max(limit - len(suffix) - 1, 0)
    cut = text[:room]
    if " " in cut and len(text) > room and not text[room].isspace():
        cut = cut.rsplit(" ", 1)[0]
    return (cut.rstrip() + "…" + suffix)[:limit]
