"""Chat completions from any OpenAI-compatible endpoint through the ``openai`` SDK.

Transport failures (connection refused, timeouts, 429, 5xx) are retried here with tenacity,
a bounded number of times with exponential back-off; the SDK's own retries are off so there is
one retry policy. After the last retry the endpoint counts as down: :class:`LLMUnavailable`
(gRPC ``UNAVAILABLE``, a NATS task nak'ed for later). A misconfiguration (bad key, unknown
model) is a ``FailedPrecondition``: retrying will not fix it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import openai
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception, stop_after_attempt, wait_exponential

from ganfolk.runtime import redact
from ganfolk.runtime.errors import FailedPrecondition, Transient
from ganfolk.runtime.redact import redact_url

log = logging.getLogger(__name__)

Message = dict[str, str]


class LLMUnavailable(Transient):
    """The endpoint did not answer after the declared retries."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError | openai.RateLimitError):
        return True  # APITimeoutError subclasses APIConnectionError; listed for clarity
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


@dataclass
class Completion:
    text: str
    finish_reason: str
    seconds: float


class LLMClient:
    """One endpoint + model; ``complete()`` is safe to call concurrently."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 2,
        retry_wait: float = 0.5,
    ) -> None:
        # The base URL may carry a key (user:key@, ?api_key=): only its redacted form is kept
        # for errors, logs and provenance; the SDK gets the real one.
        self.base_url = redact_url(base_url)
        redact.register_url(base_url)
        redact.register(api_key)
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.retry_wait = retry_wait
        # Local servers need no key, but the SDK insists on one.
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "unused", timeout=timeout, max_retries=0
        )
        self.calls = 0

    async def complete(
        self,
        messages: list[Message],
        *,
        max_tokens: int,
        temperature: float = 0.8,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> Completion:
        """The first choice's text; raises LLMUnavailable after ``retries`` failed retries."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.retry_wait, max=10 * self.retry_wait),
            retry=retry_if_exception(_retryable),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        started = time.perf_counter()
        try:
            async for attempt in retrying:
                with attempt:
                    self.calls += 1
                    reply = await self._client.chat.completions.create(
                        model=self.model,
                        messages=messages,  # type: ignore[arg-type]
                        max_tokens=max_tokens,
                        temperature=temperature,
                        seed=None if seed is None else seed % 2**31,
                        stop=stop,
                        timeout=self.timeout,
                    )
        except openai.APIStatusError as exc:
            if _retryable(exc):
                raise LLMUnavailable(
                    f"LLM endpoint {self.base_url} answered HTTP {exc.status_code} after "
                    f"{self.retries + 1} attempts"
                ) from exc
            # The server's message may echo what it was sent (a wrong key): masked.
            raise FailedPrecondition(
                f"LLM endpoint {self.base_url} refused the request (HTTP {exc.status_code}): "
                f"{redact.redact(exc.message)}; check GANFOLK_TEXT_LLM_MODEL and GANFOLK_TEXT_LLM_API_KEY"
            ) from exc
        except openai.APIConnectionError as exc:
            raise LLMUnavailable(
                f"LLM endpoint {self.base_url} unreachable after {self.retries + 1} attempts: "
                f"{redact.redact(str(exc))}"
            ) from exc
        if not reply.choices:
            return Completion("", "empty", time.perf_counter() - started)
        choice = reply.choices[0]
        seconds = time.perf_counter() - started
        return Completion(choice.message.content or "", str(choice.finish_reason), seconds)

    async def close(self) -> None:
        await self._client.close()
