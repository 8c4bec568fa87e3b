#!/usr/bin/env bash
# Generates the Python stubs for protos/ into ganfolk/v1/ (the one place stubs live).
# With --check, generates into a scratch directory and fails if ganfolk/v1/ differs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

gen() {
  local out=$1
  mkdir -p "$out/ganfolk/v1"
  "$PY" -m grpc_tools.protoc -Iprotos \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    protos/ganfolk/v1/*.proto
  printf '"""Generated from protos/ganfolk/v1 by `make protos`. Do not edit."""\n' > "$out/ganfolk/v1/__init__.py"
}

if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  gen "$tmp"
  if ! diff -r -q "$tmp/ganfolk/v1" ganfolk/v1 -x __pycache__; then
    echo "ganfolk/v1 is stale: run 'make protos' and commit the result" >&2
    exit 1
  fi
  echo "proto stubs are up to date"
else
  rm -f ganfolk/v1/*_pb2*.py ganfolk/v1/*_pb2*.pyi
  gen "${1:-.}"
fi
