#!/usr/bin/env bash
# Installs everything GANfolk needs on a fresh Debian machine. Idempotent: re-running
# only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# ipfs-cid: the independent CID implementation the mint tests compare ours with.
# chromium + chromium-driver: the gallery's browser tests (Selenium)
APT_PACKAGES=(nats-server libvulkan1 libomp5 wordnet-base docker-compose ipfs-cid chromium chromium-driver)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "==> venv (.venv) with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
echo "==> pip: requirements"
"${PIP[@]}" install -r requirements.txt -r requirements-dev.txt
if grep -qv '^\s*\(#\|$\)' requirements-nodeps.txt; then
  "${PIP[@]}" install --no-deps -r requirements-nodeps.txt
fi
"${PIP[@]}" install --no-deps --no-build-isolation -e .

if [ -f package-lock.json ]; then
  echo "==> npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "==> setup done"
