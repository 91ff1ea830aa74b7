#!/usr/bin/env bash
# The test command: set up .venv (core + test tools + the LIBERO simulator), lint, run the suites of the pinned
# environments (nox: lerobot, openvla, llara; each builds its own environment on first use), then the core suite
# (whose cross-environment serve tests use the lerobot environment built just before).
#   IVRA_SKIP_LIBERO=1 bash scripts/test.sh   # without installing LIBERO (its tests then skip, saying why)
#   IVRA_SKIP_OPENPI=1 ...                   # without the openpi-client environment (tests/serve parity tests skip)
#   IVRA_SKIP_ENVS=1 bash scripts/test.sh     # the core suite only
# Extra arguments go to the core pytest run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh dev
# the unmodified PyPI openpi-client in its own environment (numpy 1.x), for tests/serve
if [[ -z "${IVRA_SKIP_OPENPI:-}" ]]; then
  bash scripts/setup_openpi_client.sh
fi
if [[ -z "${IVRA_SKIP_LIBERO:-}" ]]; then
  bash scripts/setup_libero.sh
fi
echo "== ruff"
.venv/bin/ruff check src tests benchmarks noxfile.py
if [[ -z "${IVRA_SKIP_ENVS:-}" ]]; then
  echo "== nox (pinned environments: $(.venv/bin/nox -l 2>/dev/null | grep -E '^\* ' | cut -c3- | cut -d' ' -f1 | tr '\n' ' '))"
  .venv/bin/nox
fi
echo "== pytest (core environment)"
.venv/bin/python -m pytest "$@"
