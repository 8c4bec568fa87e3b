"""Moved to :mod:`services.training.dist` (shared with the VQGAN trainer); re-exported here."""

from services.training.dist import (
    DistEnv,
    all_gather_cat,
    all_reduce_mean,
    average_gradients,
    barrier,
    broadcast_module,
    broadcast_object,
    dist,
    init_distributed,
    shutdown,
)

__all__ = [
    "DistEnv",
    "all_gather_cat",
    "all_reduce_mean",
    "average_gradients",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "dist",
    "init_distributed",
    "shutdown",
]
