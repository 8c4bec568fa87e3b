"""Chaos run: 20 small portrait jobs through the local stack while its processes die.

    python bench/chaos.py [--jobs 20] [--samples 16] [--refine-iterations 30] [--submit-every 3]
                          [--kill-every 8] [--nats-restarts 2] [--s3-outage 10]
                          [--coordinator-kills 1] [--timeout 900]
                          [--set GANFOLK_TASK_ACK_WAIT_S=30 ...] [--seed 0] [--keep]

Every stage service and the coordinator run as ``ganfolk serve`` processes with the tiny
real models of tests/e2e, beside nats-server, an S3 API server (moto, behind a TCP proxy
so that its outage is a network one: moto's objects live in its memory) and anvil, all on
loopback. While the jobs run, a random stage service (drawn among those up) is
``kill -9``'d and restarted every few seconds, nats-server is killed and started again
(same port and JetStream store) twice, the S3 API is away for 10 s once, and the
coordinator is killed and restarted once. A service that exits by itself is restarted
too, and reported.

Printed: jobs succeeded / failed / stuck, sample objects beyond the samples asked for,
tokens per job (Minted events on the chain; must be exactly 1), tasks whose result came
from a redelivery, the longest time any job made no progress (the driver asks the
coordinator for every job twice a second), and each process's peak RSS (VmHWM, sampled).
Goal: every job succeeds, no duplicate, one token each, max stall at most 40 s. The
exit status is 0 when the goal is met. The stack runs on the services' own delivery
settings unless ``--set`` overrides them. Takes 5–10 minutes on two shared cores.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.chaos import Plan, run  # noqa: E402

MAX_STALL_GOAL_S = 40.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=16, help="StyleGAN samples per job (4 a task)")
    parser.add_argument("--refine-iterations", type=int, default=30, help="VQGAN iterations per job")
    parser.add_argument("--submit-every", type=float, default=3.0, help="seconds between submissions")
    parser.add_argument("--kill-every", type=float, default=8.0, help="mean seconds between kill -9s")
    parser.add_argument("--nats-restarts", type=int, default=2)
    parser.add_argument("--s3-outage", type=float, default=10.0, help="seconds; 0 for none")
    parser.add_argument("--coordinator-kills", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="jobs unfinished then are stuck")
    parser.add_argument("--set", action="append", default=[], metavar="GANFOLK_X=V", help="a setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (logs) also when the goal is met"
    )
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.set)
    plan = Plan(
        jobs=args.jobs,
        samples=args.samples,
        refine_iterations=args.refine_iterations,
        submit_every_s=args.submit_every,
        kill_every_s=args.kill_every,
        nats_restarts=args.nats_restarts,
        s3_outage_s=args.s3_outage,
        coordinator_kills=args.coordinator_kills,
        timeout_s=args.timeout,
        env=env,
        seed=args.seed,
    )
    work = Path(tempfile.mkdtemp(prefix="ganfolk-chaos-"))
    report = asyncio.run(run(plan, work, progress=lambda line: print(line, flush=True)))
    for line in report.lines():
        print(line)
    n = len(report.jobs)
    met = (
        report.succeeded == n
        and report.duplicates == 0
        and all(report.tokens.get(j.job_id) == 1 for j in report.jobs)
        and report.minted_total == n
        and report.max_stall <= MAX_STALL_GOAL_S
    )
    print(
        f"goal ({n}/{n} succeed, 0 duplicates, {n} tokens, max stall <= {MAX_STALL_GOAL_S:.0f} s): "
        + ("met" if met else "NOT met")
    )
    if args.keep or not met:
        print(f"logs kept in {work / 'logs'}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
