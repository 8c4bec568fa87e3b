"""How a training run tells the world how it is doing.

The loop calls one :class:`Reporter` on rank 0 only: ``started`` once, ``tick`` every few
kimg, ``snapshot`` after every checkpoint, ``finished`` once at the end (also on failure).
:class:`LogReporter` prints a progress bar and log lines; :func:`make_reporter` is the single
place that chooses what else listens (the run registry / NATS events / Prometheus
reporters live in :mod:`services.stylegan.training.progress` and are added there).

A reporter must never stop training: :class:`FanOut` swallows and logs what a reporter raises.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, Protocol, TextIO, runtime_checkable

__all__ = ["FanOut", "LogReporter", "Reporter", "make_reporter"]

log = logging.getLogger("ganfolk.train")

#: Keys the loop puts in ``tick`` stats (more may appear, e.g. ``aug/<name>``).
TICK_KEYS = (
    "iteration",
    "kimg",
    "total_kimg",
    "sec_per_kimg",
    "sec_per_iter",
    "loss_d",
    "loss_g",
    "r1",
    "path",
    "real_score",
    "fake_score",
    "ada_p",
    "ada_sign",
    "mem_gib",
)


@runtime_checkable
class Reporter(Protocol):
    """What the training loop reports to; every method is called on rank 0 only."""

    def started(self, run_id: str, config: dict[str, Any]) -> None:
        """The run starts (or resumes): its id and resolved configuration (plain JSON types)."""

    def tick(self, stats: dict[str, float]) -> None:
        """Periodic statistics: see :data:`TICK_KEYS` (means over the ranks and the tick)."""

    def snapshot(
        self, iteration: int, checkpoint_uri: str, sha256: str, grid_uri: str, metrics: dict[str, float]
    ) -> None:
        """A checkpoint was stored; ``metrics`` holds ``swd`` and, when enabled, ``fid``/``kid``."""

    def finished(self, state: str, error: str = "") -> None:
        """The run ends: ``state`` is ``succeeded``, ``failed`` or ``cancelled``."""


class LogReporter:
    """A one-line progress bar on a terminal plus ``logging`` lines for every event.

    On a non-tty stream (a pod's log) the bar is replaced by a plain line per tick, so logs
    stay greppable.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.run_id = ""
        self._t0 = time.monotonic()
        self._bar_open = False

    def _tty(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def _end_bar(self) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False

    def started(self, run_id: str, config: dict[str, Any]) -> None:
        """Log the run id and the main settings."""
        self.run_id = run_id
        self._t0 = time.monotonic()
        keys = ("size", "batch", "kimg", "iterations", "aug", "gamma", "ema_kimg", "world_size", "start_iter")
        brief = " ".join(f"{k}={config[k]}" for k in keys if k in config)
        log.info("run %s started: %s", run_id, brief)

    def tick(self, stats: dict[str, float]) -> None:
        """Draw the bar (tty) or write a line with the losses, speed and ADA p."""
        kimg, total = stats.get("kimg", 0.0), stats.get("total_kimg", 0.0)
        frac = min(1.0, kimg / total) if total > 0 else 0.0
        text = (
            f"kimg {kimg:8.2f}/{total:g} it {int(stats.get('iteration', 0))} "
            f"d {stats.get('loss_d', float('nan')):.3f} g {stats.get('loss_g', float('nan')):.3f} "
            f"r1 {stats.get('r1', float('nan')):.3f} path {stats.get('path', float('nan')):.3f} "
            f"p {stats.get('ada_p', 0.0):.3f} {stats.get('sec_per_kimg', float('nan')):.1f} s/kimg"
        )
        if "mem_gib" in stats:
            text += f" {stats['mem_gib']:.1f} GiB"
        if self._tty():
            filled = int(frac * self.width)
            self.stream.write(f"\r[{'#' * filled:<{self.width}}] {frac * 100:5.1f}% {text}")
            self.stream.flush()
            self._bar_open = True
        else:
            log.info("%s", text)

    def snapshot(
        self, iteration: int, checkpoint_uri: str, sha256: str, grid_uri: str, metrics: dict[str, float]
    ) -> None:
        """Log where the checkpoint and grid went, with the metrics."""
        self._end_bar()
        shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        log.info(
            "snapshot %06d: %s (sha256 %s) grid %s %s",
            iteration,
            checkpoint_uri,
            sha256[:12],
            grid_uri,
            shown,
        )

    def finished(self, state: str, error: str = "") -> None:
        """Log the outcome and the wall time."""
        self._end_bar()
        took = time.monotonic() - self._t0
        if error:
            log.error("run %s %s after %.0f s: %s", self.run_id, state, took, error)
        else:
            log.info("run %s %s after %.0f s", self.run_id, state, took)


class FanOut:
    """Several reporters as one; one that raises is logged and skipped, training goes on."""

    def __init__(self, reporters: Sequence[Reporter]) -> None:
        self.reporters = list(reporters)

    def _each(self, method: str, *args: Any) -> None:
        for reporter in self.reporters:
            try:
                getattr(reporter, method)(*args)
            except Exception:  # a broken dashboard must not cost a training run
                log.exception("reporter %s.%s failed", type(reporter).__name__, method)

    def started(self, run_id: str, config: dict[str, Any]) -> None:
        """Forward to every reporter."""
        self._each("started", run_id, config)

    def tick(self, stats: dict[str, float]) -> None:
        """Forward to every reporter."""
        self._each("tick", stats)

    def snapshot(
        self, iteration: int, checkpoint_uri: str, sha256: str, grid_uri: str, metrics: dict[str, float]
    ) -> None:
        """Forward to every reporter."""
        self._each("snapshot", iteration, checkpoint_uri, sha256, grid_uri, metrics)

    def finished(self, state: str, error: str = "") -> None:
        """Forward to every reporter."""
        self._each("finished", state, error)


def make_reporter(config: Any, extra: Sequence[Reporter] = ()) -> Reporter:
    """The reporter of a run: a :class:`LogReporter` plus the run registry's, when available.

    ``config`` is the run's :class:`~services.stylegan.training.config.TrainConfig`. The
    registry side (NATS ``ganfolk.train.<run>`` events, KV record, Prometheus) is built by
    ``services.stylegan.training.progress.make_reporters(config)`` -> list of reporters, when
    that module exists; it is looked up lazily so training without it still works.
    """
    reporters: list[Reporter] = [LogReporter(), *extra]
    try:
        progress = importlib.import_module("services.stylegan.training.progress")
    except ModuleNotFoundError as exc:
        if exc.name != "services.stylegan.training.progress":
            raise
    else:
        factory = getattr(progress, "make_reporters", None)
        if factory is not None:
            reporters.extend(factory(config))
    return FanOut(reporters)
