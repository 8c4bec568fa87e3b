"""Starting a run on this node: in this process for one process, else through ``torchrun``.

A model's run module (``python -m <module> ...``) is what ``torchrun`` starts on every rank; the
configuration travels as arguments (``cfg.to_argv()``), the object-store URL through the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.storage import ObjectStore, open_store
from services.training import dist

__all__ = [
    "DEVICES",
    "RESUME_MODES",
    "ConfigError",
    "LaunchConfig",
    "add_launch_arguments",
    "launch_command",
    "leave",
    "open_run_store",
    "run_reported",
    "setup_logging",
    "single_process",
    "start",
]

STORE_ENV = "GANFOLK_STORE_URL"
RESUME_MODES = ("auto", "latest", "none")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(InvalidArgument):
    """Options that cannot make a training run; the message names the option to change."""


def open_run_store(store_url: str, locations: Iterable[str]) -> ObjectStore | None:
    """The object store a run's ``s3://`` locations live in; None when none is ``s3://``."""
    if not any(x.startswith("s3://") for x in locations):
        return None
    if not store_url:
        raise ConfigError(f"s3:// locations need an object store: set --store-url or {STORE_ENV}")
    try:
        return open_store(store_url)
    except ValueError as exc:
        raise ConfigError(f"--store-url: {exc}") from None


class LaunchConfig(Protocol):
    """The launch options both models' configurations have."""

    gpus: int
    nnodes: str
    rdzv_endpoint: str
    rdzv_id: str
    max_restarts: int
    store_url: str

    def derived_run_id(self) -> str: ...

    def to_argv(self) -> list[str]: ...


def add_launch_arguments(p: argparse.ArgumentParser, d: Any) -> Any:
    """The "launch" and "run and resume" options of every model, defaults from ``d``.

    Returns the "run and resume" group, for a model's own resume options.
    """
    g = p.add_argument_group("launch")
    g.add_argument("--gpus", type=int, default=d.gpus, help="processes per node (one per GPU)")
    g.add_argument("--nnodes", default=d.nnodes, help="nodes: N or MIN:MAX (elastic)")
    g.add_argument("--rdzv-endpoint", default="", help="host:port of the c10d rendezvous (many nodes)")
    g.add_argument("--rdzv-id", default="", help="rendezvous id shared by the nodes (default: run id)")
    g.add_argument("--max-restarts", type=int, default=d.max_restarts, help="elastic worker restarts")
    g.add_argument("--device", default=d.device, choices=DEVICES)
    g.add_argument("--dist-timeout", type=float, default=d.dist_timeout, help="collective timeout, s")
    r = p.add_argument_group("run and resume")
    r.add_argument("--run-id", default="", help="name of the run (default: derived from the options)")
    r.add_argument(
        "--resume",
        default=d.resume,
        choices=RESUME_MODES,
        help="auto: continue this run's latest checkpoint if any; latest: continue whatever the output "
        "holds; none: refuse an output with checkpoints",
    )
    r.add_argument("--check", action="store_true", help="validate everything, print the plan, exit")
    return r


def launch_command(cfg: LaunchConfig, module: str) -> list[str]:
    """The ``torchrun`` command that starts ``python -m module`` on every process of this node."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={cfg.gpus}",
        f"--max-restarts={cfg.max_restarts}",
    ]
    if cfg.nnodes == "1" and not cfg.rdzv_endpoint:
        cmd.append("--standalone")
    else:
        cmd += [
            f"--nnodes={cfg.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={cfg.rdzv_endpoint}",
            f"--rdzv-id={cfg.rdzv_id or cfg.derived_run_id()}",
        ]
    return [*cmd, "-m", module, *cfg.to_argv()]


def single_process(cfg: LaunchConfig) -> bool:
    """One process on one node with no elastic restarts: no torchrun needed."""
    return cfg.gpus == 1 and cfg.nnodes == "1" and not cfg.rdzv_endpoint and cfg.max_restarts == 0


def start(cfg: LaunchConfig, module: str, worker: Callable[[Any], int]) -> int:
    """Run ``cfg``: ``worker(cfg)`` here for one process, else replace this process with torchrun."""
    if single_process(cfg):
        return worker(cfg)
    cmd = launch_command(cfg, module)
    env = dict(os.environ)
    if cfg.store_url:
        # Through the environment, not argv: the URL may hold credentials, and argv is public.
        env[STORE_ENV] = cfg.store_url
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)


def setup_logging(rank: int) -> None:
    """Log lines with the rank; INFO on rank 0, warnings elsewhere (unless logging is set up)."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def leave(*, clean: bool) -> None:
    """Leave the process group: after a barrier when all went well, at once otherwise."""
    if clean:
        dist.shutdown()
    elif dist.dist.is_initialized():
        # No barrier: the other ranks may be gone or stuck; torchrun tears the group down.
        dist.dist.destroy_process_group()


def run_reported(reporter: Any, body: Callable[[], None]) -> int:
    """Run one rank's training ``body``; tell ``reporter`` (rank 0's, else None) how it ended.

    Returns the exit status (0, or 130 when interrupted) after leaving the process group; any
    other exception is reported as a failure and raised.
    """
    try:
        body()
    except KeyboardInterrupt:
        if reporter is not None:
            reporter.finished("cancelled", "interrupted")
        leave(clean=False)
        return 130
    except BaseException as exc:
        if reporter is not None:
            reporter.finished("failed", f"{type(exc).__name__}: {exc}")
        leave(clean=False)
        raise
    if reporter is not None:
        reporter.finished("succeeded")
    leave(clean=True)
    return 0
