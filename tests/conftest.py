"""Real infrastructure for the tests: nats-server, an S3-API server (moto), gRPC on loopback."""

from __future__ import annotations

import os

import pytest

# The text service asks Wikipedia by default; no test may reach a public host, and services
# the tests start (in-process or as `ganfolk up` children) read this. Tests of the online
# check point it at a MediaWiki stand-in on loopback.
os.environ["GANFOLK_TEXT_WIKIPEDIA_API_URL"] = ""

pytest_plugins = ["tests.fixtures.nats", "tests.fixtures.s3", "tests.fixtures.head_start"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
