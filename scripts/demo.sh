#!/usr/bin/env bash
# Fresh machine -> one portrait, offline: install, bring the local stack up, run a job,
# print where every output is, stop the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

STATE=${GANFOLK_STATE_DIR:-.state}
export GANFOLK_STATE_DIR=$STATE
# Demo defaults: real faces from the MobileStyleGAN demo generator (non-commercial weights),
# ncnn Real-ESRGAN, the local LLM, the local chain. Real checkpoints configured in the
# environment take precedence.
export GANFOLK_STYLEGAN_BACKEND=${GANFOLK_STYLEGAN_BACKEND:-mobilestylegan}
export GANFOLK_STYLEGAN_OUTPUT_SIZE=${GANFOLK_STYLEGAN_OUTPUT_SIZE:-256}

.venv/bin/ganfolk down >/dev/null 2>&1 || true
trap '.venv/bin/ganfolk down' EXIT
.venv/bin/ganfolk up --allow-random-weights
.venv/bin/ganfolk portrait "${PROMPT:-charcoal sketch of an inquisitive Turkish boy}" \
  --samples "${SAMPLES:-24}" --task-size "${TASK_SIZE:-8}" --top-k 4 --iterations "${ITERATIONS:-5}" \
  --seed "${SEED:-1}" --out "${OUT:-portraits}"
