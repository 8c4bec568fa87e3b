"""Settings of the coordinator (GANFOLK_COORDINATOR_*)."""

from __future__ import annotations

import os
import re
from typing import Self

from pydantic import Field, SecretStr, model_validator

from ganfolk.runtime import limits
from ganfolk.runtime.catalog import Stage
from ganfolk.runtime.settings import ConfigError, Settings, env_name

TIMEOUT_FIELD = re.compile(r"coordinator_timeout_(?P<stage>.+)_s")


def timeout_field(stage: Stage) -> str:
    """The settings field holding a stage's timeout: ``coordinator_timeout_<stage>_s``."""
    return f"coordinator_timeout_{stage.value}_s"


class CoordinatorSettings(Settings):
    # Bearer token required on the jobs API when set.
    coordinator_auth_token: SecretStr | None = None
    # How long each stage may run before the job fails, in seconds (CPU-sized defaults).
    # One field per stage the coordinator dispatches; a test keeps them in step with the pipeline.
    coordinator_timeout_prompts_s: float = 300.0
    coordinator_timeout_sample_s: float = 3600.0
    coordinator_timeout_rank_s: float = 1800.0
    coordinator_timeout_refine_s: float = 7200.0
    coordinator_timeout_finish_s: float = 1800.0
    coordinator_timeout_name_s: float = 600.0
    coordinator_timeout_backstory_s: float = 600.0
    coordinator_timeout_mint_s: float = 600.0
    # How often stalled jobs and stage timeouts are checked.
    coordinator_sweep_interval_s: float = 5.0
    # A job still QUEUED this long after submission gets its first tasks re-published.
    coordinator_stall_s: float = 15.0
    # Finished jobs stay in the jobs bucket this long, then are archived to the store (Get
    # still finds them, List no longer lists them); 0 keeps them in the bucket for ever.
    coordinator_job_retention_s: float = Field(default=7 * 24 * 3600.0, ge=0)
    coordinator_max_samples: int = limits.MAX_SAMPLES_PER_JOB
    # Events redelivered if the coordinator dies before acking them.
    coordinator_event_ack_wait_s: float = 30.0
    # Lifetime of the presigned URLs GetOutputs hands out (S3 stores).
    coordinator_output_url_ttl_s: int = 300
    # The text service, for the notability check of names edited in review (host:port);
    # empty: the text service's port from the catalog on this host.
    coordinator_text_target: str = ""
    coordinator_name_check_timeout_s: float = 30.0

    @model_validator(mode="after")
    def _timeouts_name_stages(self) -> Self:
        # pydantic ignores unknown variables, so a typo such as GANFOLK_COORDINATOR_TIMEOUT_SAMPLES_S
        # would silently leave the default in place: refuse to start instead.
        fields = type(self).model_fields
        timed = sorted(m["stage"] for name in fields if (m := TIMEOUT_FIELD.fullmatch(name)))
        for stage in timed:
            if stage not in {s.value for s in Stage}:
                raise ConfigError(f"{env_name(f'coordinator_timeout_{stage}_s')} is for {stage!r}, no stage")
        known = {env_name(name) for name in fields}
        prefix = env_name("coordinator_timeout_")
        for variable in os.environ:
            if variable.upper().startswith(prefix) and variable.upper() not in known:
                raise ConfigError(
                    f"{variable} names no stage the coordinator runs; "
                    f"set {prefix}<STAGE>_S for one of: {', '.join(timed)}"
                )
        return self

    def grpc_token(self) -> str:
        """The jobs API's token: GANFOLK_COORDINATOR_AUTH_TOKEN, else GANFOLK_GRPC_AUTH_TOKEN."""
        token = self.coordinator_auth_token or self.grpc_auth_token
        return token.get_secret_value() if token else ""

    def text_target(self) -> str:
        """Where the text service answers ``Name`` for the review's name check."""
        from ganfolk.runtime.catalog import entry

        return self.coordinator_text_target or f"127.0.0.1:{entry('text').port}"

    def timeout_for(self, stage: Stage) -> float:
        """Seconds ``stage`` may run; AttributeError for a stage without a timeout (a bug, kept
        out by a test that checks every dispatched stage has one)."""
        return float(getattr(self, timeout_field(stage)))
