#!/usr/bin/env bash
# The test command: set up .venv (core + test tools + the LIBERO simulator), lint, run the whole suite.
#   IVRA_SKIP_LIBERO=1 bash scripts/test.sh   # without installing LIBERO (its tests then skip, saying why)
#   IVRA_SKIP_OPENPI=1 ...                   # without the openpi-client environment (tests/serve parity tests skip)
# Extra arguments go to pytest.
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
.venv/bin/ruff check src tests benchmarks
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
