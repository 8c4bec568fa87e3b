"""Settings of the coordinator (GANFOLK_COORDINATOR_*)."""

from __future__ import annotations

from pydantic import SecretStr

from ganfolk.runtime.settings import Settings


class CoordinatorSettings(Settings):
    # Bearer token required on the jobs API when set.
    coordinator_auth_token: SecretStr | None = None
    # How long each stage may run before the job fails, in seconds (CPU-sized defaults).
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
    coordinator_max_samples: int = 10_000
    # Events redelivered if the coordinator dies before acking them.
    coordinator_event_ack_wait_s: float = 30.0
