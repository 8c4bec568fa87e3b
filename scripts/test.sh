#!/usr/bin/env bash
# The test command: proto freshness and lint, ruff, mypy, then the suite on real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

echo "==> protos"
bash scripts/gen_protos.sh --check
npx --no-install buf lint
echo "==> ruff"
$PY -m ruff check .
$PY -m ruff format --check .
echo "==> mypy"
$PY -m mypy ganfolk services
if [ -x scripts/validate_deploy.sh ]; then
  echo "==> deploy manifests"
  bash scripts/validate_deploy.sh
fi
echo "==> pytest"
# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
$PY -m pytest -q -p no:cacheprovider "$@"
