#!/usr/bin/env bash
# The test command: install, lint, type-check, then the fast tests, then the multi-process ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "== ruff"; ruff check src tests
echo "== mypy"; mypy
run_pytest() {  # exit 5 means "no test selected": not a failure for one stage
  python3 -m pytest -q "$@" || { rc=$?; [ "$rc" -eq 5 ] || exit "$rc"; }
}
echo "== tests (fast)"; run_pytest -m "not slow and not xen" "$@"
echo "== tests (multi-process)"; run_pytest -m "slow and not xen" "$@"
