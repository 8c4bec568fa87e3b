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
# Weights fetched by `ganfolk models pull` (on a machine with internet) are listed in
# $STATE/models.env; a variable already set in the environment wins over the file.
if [ -f "$STATE/models.env" ]; then
  while IFS= read -r line; do
    name=${line%%=*}
    [[ $name =~ ^GANFOLK_[A-Z0-9_]+$ ]] || continue
    [ -n "${!name+set}" ] || eval "export $line"
  done <"$STATE/models.env"
fi

.venv/bin/ganfolk down >/dev/null 2>&1 || true
trap '.venv/bin/ganfolk down' EXIT
.venv/bin/ganfolk up --allow-random-weights
LOG=$(mktemp)
trap '.venv/bin/ganfolk down; rm -f "$LOG"' EXIT
PYTHONUNBUFFERED=1 .venv/bin/ganfolk portrait "${PROMPT:-charcoal sketch of an inquisitive Turkish boy}" \
  --samples "${SAMPLES:-24}" --task-size "${TASK_SIZE:-8}" --top-k 4 --iterations "${ITERATIONS:-5}" \
  --seed "${SEED:-1}" --out "${OUT:-portraits}" | tee "$LOG"
if grep -q '^skipped:' "$LOG"; then
  cat <<'HINT'

hint: stages were skipped for want of weights. On a machine with internet, run
  .venv/bin/ganfolk models pull
and then `make demo` again: it fetches the public checkpoints (CLIP ViT-B/32, the VQGAN
ImageNet f16 model, Real-ESRGAN x4plus, LaMa, the dlib models) into the store, and the demo
runs the full pipeline, CLIP ranking and VQGAN refinement included.
HINT
fi
