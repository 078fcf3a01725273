#!/usr/bin/env bash
# Set up (or reuse) .venv with every extra and run the whole test suite. `.ci/run` calls this.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-venv.sh zoo,dev
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
  echo "pytest collected no tests (exit 5): treated as failure-free but empty" >&2
  exit 0
fi
exit $code
