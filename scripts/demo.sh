#!/usr/bin/env bash
# The main job: install, then run the demo world (xenstored, backend, guest as processes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec xennet demo "$@"
