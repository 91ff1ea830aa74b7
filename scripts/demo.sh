#!/usr/bin/env bash
# The main job: set up .venv, then run the paired baseline-vs-IVRA demo of the shipped tiny policy on the
# built-in tabletop benchmark. Extra arguments go to `ivra demo` (e.g. --episodes 1000).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh core
exec .venv/bin/ivra demo "$@"
