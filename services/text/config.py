"""Settings of the text service (GANFOLK_TEXT_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from ganfolk.runtime import limits
from ganfolk.runtime.settings import Settings


class TextSettings(Settings):
    # Any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama, a llama.cpp server such as
    # ``python -m services.text.local_llm``. Unset: the template writer answers everything.
    text_llm_base_url: str | None = None
    text_llm_model: str = "smollm2-135m-instruct"
    text_llm_api_key: SecretStr | None = None
    # Seconds one HTTP call may take, and transport-level retries (connection errors,
    # timeouts, 429 and 5xx) with exponential back-off between them.
    text_llm_timeout_seconds: float = 60.0
    text_llm_retries: int = 2
    text_llm_retry_wait_seconds: float = 0.5
    text_llm_temperature: float = 0.8
    # Parallel LLM calls of one Prompts request.
    text_llm_concurrency: int = 4
    # Answers asked for per item while the previous ones were invalid (or notable, for names).
    text_max_attempts: int = 4
    # Requests may raise the attempts up to this bound.
    text_max_attempts_limit: int = 10
    # Without re-asking forever: fall back to the template writer when answers stay invalid.
    text_template_fallback: bool = True
    # Template names and the check that a name fits the person's country and gender, from
    # names-dataset's per-country data (2 GB, loaded on first use).
    text_names_dataset: bool = True
    # An LLM name must be a first name of the person's country and gender and a surname
    # there; off accepts any well-formed name that is not notable.
    text_names_must_fit: bool = True
    text_max_prompts: int = 100
    text_backstory_max_words: int = 80
    text_backstory_words_limit: int = 300
    # Descriptions may be whole free-form prompts; the coordinator checks jobs against the
    # same limits at Submit (keep these at least as large).
    text_max_description_chars: int = limits.MAX_DESCRIPTION_CHARS
    text_max_name_chars: int = limits.MAX_NAME_CHARS
    # WordNet (Debian wordnet-base) for the offline notability check.
    text_wordnet_dir: Path = Path("/usr/share/wordnet")
    # MediaWiki API for the online check, as the article did; empty turns it off (the tests do).
    # Unreachable: the offline checks decide and the provenance says "notability: offline only".
    text_wikipedia_api_url: str = "https://en.wikipedia.org/w/api.php"
    # One deadline for all attempts of one name (DNS included), and the retries within it
    # (HTTP 429 and 5xx only: an unreachable API fails fast).
    text_wikipedia_timeout_seconds: float = 2.0
    text_wikipedia_retries: int = 1
    # After a failure the online check is skipped this long, so an offline host pays the
    # deadline once a minute, not once per name.
    text_wikipedia_retry_after_seconds: float = 60.0
    # Notable names the offline check also rejects: a text or CSV file, one name a line (e.g.
    # Wikidata humans' labels), as a path or an s3:// URI in the store.
    text_notable_names: str | None = None
    text_notable_names_sha256: str | None = None
