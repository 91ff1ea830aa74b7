#!/usr/bin/env bash
# The test command: set up .venv (core + test tools + the LIBERO simulator), lint, then the suites:
#   nox lerobot -> core pytest (its cross-environment serve tests use the lerobot environment) -> nox openvla -> nox llara
# Each nox session builds its pinned environment on first use (.nox/<name>, several GB each).
#   IVRA_SKIP_LIBERO=1 bash scripts/test.sh   # without installing LIBERO (its tests then skip, saying why)
#   IVRA_SKIP_OPENPI=1 ...                   # without the openpi-client environment (tests/serve parity tests skip)
#   IVRA_SKIP_ENVS=1 bash scripts/test.sh     # the core suite only
#   IVRA_PRUNE_ENVS=1 ...                    # delete each pinned environment once its suites ran (peak disk: one env)
# Every suite runs even when an earlier one failed; the exit code is non-zero if any failed.
# Extra arguments go to the core pytest run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
echo "== disk free at $ROOT: $(df -h --output=avail . | tail -1 | tr -d ' ') (the full run needs about 15 GB)"
bash scripts/setup.sh dev
# the unmodified PyPI openpi-client in its own environment (numpy 1.x), for tests/serve
if [[ -z "${IVRA_SKIP_OPENPI:-}" ]]; then
  bash scripts/setup_openpi_client.sh
fi
if [[ -z "${IVRA_SKIP_LIBERO:-}" ]]; then
  bash scripts/setup_libero.sh
fi
# Debian's chromium: tests/eval/test_report_html.py renders the HTML report headless (it skips, saying why, without)
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
    echo "== installing chromium (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
      >/dev/null || echo "warning: apt-get could not install chromium; the HTML report test will skip" >&2
  else
    echo "== no chromium, and no apt-get as root to install it: the HTML report test will skip"
  fi
fi
echo "== ruff"
.venv/bin/ruff check src tests benchmarks examples noxfile.py

failed=()
env_session() {  # run one nox session; prune its environment afterwards when asked
  echo "== nox -s $1 (disk free: $(df -h --output=avail . | tail -1 | tr -d ' '))"
  .venv/bin/nox -s "$1" || failed+=("nox -s $1")
}
prune() {
  if [[ -n "${IVRA_PRUNE_ENVS:-}" ]]; then rm -rf ".nox/$1"; fi
}
if [[ -z "${IVRA_SKIP_ENVS:-}" ]]; then
  env_session lerobot
fi
echo "== pytest (core environment)"
.venv/bin/python -m pytest --durations=20 "$@" || failed+=("core pytest")
if [[ -z "${IVRA_SKIP_ENVS:-}" ]]; then
  prune lerobot
  for name in openvla llara flower; do
    env_session "$name"
    prune "$name"
  done
fi
if (( ${#failed[@]} )); then
  echo "== FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "== all suites passed"
