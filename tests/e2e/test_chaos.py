"""A short chaos run (bench/chaos.py runs the full one): every fault kind once, nothing lost or doubled."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.chaos import Plan, run


@pytest.mark.timeout(900)  # seven service processes start, and restart, on shared CPUs
async def test_short_chaos_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    # An undisturbed job takes seconds, so the jobs go in over the faults' window and kills
    # start early. Short ack waits: a task a killed worker held is redelivered within seconds.
    plan = Plan(
        jobs=3,
        submit_every_s=5.0,
        faults_within_s=12.0,
        kill_every_s=6.0,
        nats_restarts=1,
        s3_outage_s=3.0,
        coordinator_kills=1,
        timeout_s=400.0,
        env={
            "GANFOLK_TASK_ACK_WAIT_S": "3",
            "GANFOLK_COORDINATOR_EVENT_ACK_WAIT_S": "3",
            "GANFOLK_COORDINATOR_STALL_S": "5",
        },
    )
    report = await run(plan, tmp_path)
    summary = "\n".join(report.lines())
    print(summary)
    n = plan.jobs
    assert report.succeeded == n and report.failed == 0 and report.stuck == 0, summary
    assert report.duplicates == 0 and report.missing == 0, summary
    assert all(report.tokens[j.job_id] == 1 for j in report.jobs), summary
    assert report.minted_total == n, summary  # no token minted outside the jobs either
    kinds = report.fault_counts()
    # Each kind of fault happened while jobs were still running.
    assert kinds["kill-9"] >= 1 and kinds["nats-restart"] == 1, summary
    assert kinds["s3-outage"] == 1 and kinds["coordinator-kill-9"] == 1, summary
