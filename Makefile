# GANfolk developer entry points. `make help` lists them.
SHELL := /bin/bash
PY ?= .venv/bin/python
PROTO_SRC := $(wildcard protos/ganfolk/v1/*.proto)
PROTO_OUT := .

.PHONY: help setup protos check-protos lint typecheck test test-fast demo up down clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup:  ## install everything on a fresh Debian machine (idempotent)
	bash scripts/setup.sh

protos:  ## generate Python stubs from protos/ into ganfolk/v1/
	bash scripts/gen_protos.sh $(PROTO_OUT)

check-protos:  ## fail when ganfolk/v1/ is stale or the protos do not lint
	bash scripts/gen_protos.sh --check
	npx --no-install buf lint

lint: typecheck  ## mypy, then ruff check and ruff format --check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck:  ## mypy over ganfolk/ and services/
	$(PY) -m mypy ganfolk services

test:  ## proto, lint, types and deploy checks, then the full suite (real nats-server, S3 API, gRPC)
	bash scripts/test.sh

# The edit-run loop: no lint, no end-to-end stack (tests/e2e) and no manifest validation
# (tests/deploy), the two slowest parts; `make test` still runs everything.
test-fast:  ## the suite without tests/e2e, tests/deploy and slow-marked tests
	$(PY) -m pytest -q -p no:cacheprovider --ignore=tests/e2e --ignore=tests/deploy -m "not slow"

demo:  ## set up, bring the local stack up and run a portrait job end to end
	bash scripts/demo.sh

up:  ## start the local stack (nats-server, store, services) in the background
	.venv/bin/ganfolk up

down:  ## stop the local stack
	.venv/bin/ganfolk down

clean:  ## remove local state (.state) and tool caches
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache
