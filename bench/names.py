"""Names that fit the person and are never famous, with the local LLM (a benchmark, not a test).

Starts SmolLM2-135M on llama.cpp (``services.text.local_llm.LocalLLM``), takes ``--count``
balanced prompts (template-written; ``--llm-prompts`` has the LLM write them), then has the LLM
name each prompt's person the way a collection is named (one shared set of taken names, so a
repeat is re-asked, then drawn from the templates). It prints:

- the share of final names whose first name is of the prompt's country and gender and whose
  surname is of that country (names-dataset; countries it lacks are counted apart as unchecked),
  and the same share over the LLM's own parsed answers (before any re-ask);
- the share of names that had an answer rejected as notable and were re-asked;
- the share that fell back to the template writer;
- duplicate answers per 100 names (re-asked) and duplicate final names (0 by design).

The online notability check is off unless ``--wikipedia URL`` is given (the benchmark machines
have no internet); ``--notable-names FILE`` adds a list of notable names to the offline check.

    python bench/names.py [--count 100] [--seed 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.text.config import TextSettings  # noqa: E402
from services.text.core import (  # noqa: E402
    NameResult,
    Outcome,
    TextCore,
    available_countries,
    balanced_subjects,
    load_core,
    name_key,
    parse_name,
    template_prompt,
)
from services.text.local_llm import LocalLLM  # noqa: E402
from tests.fixtures.nats import free_port  # noqa: E402


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} = {100 * part / whole:.1f}%" if whole else "n/a"


async def run(core: TextCore, count: int, seed: int, llm_prompts: bool) -> None:
    started = time.perf_counter()
    if llm_prompts:
        prompts, prompt_outcome = await core.prompts(count, seed)
    else:
        # The same balanced subjects, written by the template writer: the names are measured,
        # and the LLM's prompts would only add a quarter of an hour on shared CPUs.
        plans = balanced_subjects(count, seed, countries=available_countries(core.names))
        prompts, prompt_outcome = [template_prompt(plan, seed + i) for i, plan in enumerate(plans)], Outcome()
    prompt_seconds = time.perf_counter() - started
    print(f"prompts: {count} in {prompt_seconds:.0f}s, {prompt_outcome.llm_calls} LLM calls, "
          f"{len(prompt_outcome.rejected)} answers re-asked; fallbacks {prompt_outcome.fallbacks or 'none'}")  # fmt: skip

    taken: set[str] = set()
    started = time.perf_counter()
    results: list[NameResult] = await asyncio.gather(
        *(core.name(p.description, seed * 1000 + i, exclude=taken, claim=True) for i, p in enumerate(prompts))
    )
    name_seconds = time.perf_counter() - started

    dataset_codes = set(core.names.dataset().country_codes)
    fits = checked = notable_reasked = templated = duplicate_answers = 0
    llm_answers = llm_fit = 0
    reasons: Counter[str] = Counter()
    for result in results:
        subject = result.subject
        assert subject is not None
        code, gender = subject.country.code, subject.gender
        if code in dataset_codes:
            checked += 1
            fits += core.names.fits(result.first, result.last, code, gender).reason is None
        rejected = result.outcome.rejected
        reasons.update(r.split(":")[0] for r in rejected)
        notable_reasked += any(r.startswith("notable:") for r in rejected)
        templated += "template-writer" in result.outcome.fallbacks
        duplicate_answers += sum(r.startswith("duplicate:") for r in rejected)
        # The LLM's own well-formed answers: rejected ones (misfit, notable, duplicate) and the
        # accepted one, if any; a misfit is the only kind that did not fit.
        answers = sum(r.startswith(("misfit:", "notable:", "duplicate:")) for r in rejected)
        accepted = 0 if "template-writer" in result.outcome.fallbacks else 1
        if code in dataset_codes:
            llm_answers += answers + accepted
            llm_fit += answers + accepted - sum(r.startswith("misfit:") for r in rejected)
    finals = [name_key(r.first, r.last) for r in results]
    malformed = []
    for result in results:
        try:
            parse_name(f"{result.first} {result.last}")
        except ValueError as exc:
            malformed.append(str(exc))

    print(f"names: {count} in {name_seconds:.0f}s, {sum(r.outcome.llm_calls for r in results)} LLM calls")
    print(f"  right country and gender (final names, names-dataset countries): {_share(fits, checked)}")
    print(f"  unchecked (country not in names-dataset): {count - checked}")
    print(f"  LLM answers of the right country and gender (before re-asks): {_share(llm_fit, llm_answers)}")
    print(f"  rejected as notable and re-asked: {_share(notable_reasked, count)}")
    print(f"  fell back to the template writer: {_share(templated, count)}")
    print(f"  duplicate answers re-asked, per 100 names: {100 * duplicate_answers / count:.1f}")
    print(f"  duplicate final names: {len(finals) - len(set(finals))}")
    print(f"  rejections by kind: {dict(reasons)}")
    print(f"  final names the name parser would refuse: {len(malformed)} {malformed[:3]}")
    for parts, result in list(zip(prompts, results, strict=True))[:8]:
        print(f"    {parts.text} -> {result.first} {result.last}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--attempts", type=int, default=4, help="answers asked per name before the templates")
    parser.add_argument(
        "--wikipedia", default="", help="MediaWiki API URL (default: off, offline checks only)"
    )
    parser.add_argument("--notable-names", default=None, help="a list of notable names for the offline check")
    parser.add_argument("--llm-prompts", action="store_true", help="the LLM writes the prompts too (slower)")
    args = parser.parse_args()
    with LocalLLM(free_port(), threads=args.threads, parallel=2) as llm:
        settings = TextSettings(
            text_llm_base_url=llm.base_url,
            text_llm_timeout_seconds=120,
            text_max_attempts=args.attempts,
            text_llm_concurrency=2,
            text_wikipedia_api_url=args.wikipedia,
            text_notable_names=args.notable_names,
        )
        core = load_core(settings)
        started = time.perf_counter()
        core.names.dataset()  # names-dataset loads once, before anything is timed
        print(f"names-dataset loaded in {time.perf_counter() - started:.0f}s; LLM {llm.base_url}")
        asyncio.run(run(core, args.count, args.seed, args.llm_prompts))


if __name__ == "__main__":
    main()
