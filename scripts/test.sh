#!/usr/bin/env bash
# The test command: set up .venv (core + test tools + the LIBERO simulator), lint, then the suites:
#   core pytest (its cross-environment serve tests use the lerobot environment) -> nox lerobot -> openvla ->
#   llara -> flower
# Every environment is created and filled with uv (scripts/uv.sh: a pinned uv from PyPI, this machine's pip
# sources, one wheel cache in .cache/uv for all of them). The pinned environments (.nox/<name>, several GB each)
# are built one after the other in the background, starting before the core suite: lerobot first (the core suite
# waits for it), the others while the core suite runs; each environment's suite then runs on its built
# environment (nox -R). Build logs: .nox/logs/<name>.log (printed when a build fails).
#   IVRA_SKIP_LIBERO=1 bash scripts/test.sh   # without installing LIBERO (its tests then skip, saying why)
#   IVRA_SKIP_OPENPI=1 ...                   # without the openpi-client environment (tests/serve parity tests skip)
#   IVRA_SKIP_ENVS=1 bash scripts/test.sh     # the core suite only
#   IVRA_PRUNE_ENVS=1 ...                    # delete each pinned environment once its suites ran, and uv's
#                                            # wheel cache at the end (as CI does)
#   IVRA_SERIAL_ENVS=1 ...                   # build each environment right before its suite, nothing in parallel
# Every suite runs even when an earlier one failed; the exit code is non-zero if any failed.
# Extra arguments go to the core pytest run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS=0
phase() { echo "== [${SECONDS}s] $*"; }
phase "disk free at $ROOT: $(df -h --output=avail . | tail -1 | tr -d ' ') (the full run needs about 25 GB)"
bash scripts/setup.sh dev
source scripts/uv.sh

ENVS=(lerobot openvla llara flower)
mkdir -p .nox/logs
build_envs() {  # build every pinned environment (install phase only), one after the other; a status file each
  for name in "${ENVS[@]}"; do
    rm -f ".nox/logs/$name.status"
    local t0=$SECONDS rc=0
    .venv/bin/nox -s "$name" --install-only >".nox/logs/$name.log" 2>&1 || rc=$?
    echo "$rc $((SECONDS - t0))" >".nox/logs/$name.status"
  done
}
wait_built() {  # until the background build of $1 ended; its exit status
  while [[ ! -f ".nox/logs/$1.status" ]]; do
    if ! kill -0 "$BUILDER" 2>/dev/null && [[ ! -f ".nox/logs/$1.status" ]]; then return 1; fi
    sleep 2
  done
  read -r rc secs <".nox/logs/$1.status"
  phase "environment $1 built in ${secs}s (exit $rc)"
  if [[ "$rc" != 0 ]]; then tail -n 40 ".nox/logs/$1.log" >&2; fi
  return "$rc"
}
BUILDER=""
trap 'if [[ -n "$BUILDER" ]]; then kill "$BUILDER" 2>/dev/null || true; fi' INT TERM
if [[ -z "${IVRA_SKIP_ENVS:-}" && -z "${IVRA_SERIAL_ENVS:-}" ]]; then
  phase "building the pinned environments in the background: ${ENVS[*]} (logs in .nox/logs)"
  build_envs &
  BUILDER=$!
fi

# the unmodified PyPI openpi-client in its own environment (numpy 1.x), for tests/serve
if [[ -z "${IVRA_SKIP_OPENPI:-}" ]]; then
  phase "openpi-client environment"
  bash scripts/setup_openpi_client.sh
fi
if [[ -z "${IVRA_SKIP_LIBERO:-}" ]]; then
  phase "LIBERO"
  bash scripts/setup_libero.sh
fi
# Debian's chromium: tests/eval/test_report_html.py renders the HTML report headless (it skips, saying why, without)
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
    phase "installing chromium (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
      >/dev/null || echo "warning: apt-get could not install chromium; the HTML report test will skip" >&2
  else
    echo "== no chromium, and no apt-get as root to install it: the HTML report test will skip"
  fi
fi
phase "ruff"
.venv/bin/ruff check src tests benchmarks examples noxfile.py scripts

failed=()
env_session() {  # run one environment's suite; prune its environment afterwards when asked
  local name=$1
  if [[ -n "$BUILDER" ]]; then
    if ! wait_built "$name"; then
      failed+=("nox -s $name (build)")
      return
    fi
    phase "nox -s $name (suite on the built environment; disk free: $(df -h --output=avail . | tail -1 | tr -d ' '))"
    .venv/bin/nox -s "$name" -R || failed+=("nox -s $name")
  else
    phase "nox -s $name (build + suite; disk free: $(df -h --output=avail . | tail -1 | tr -d ' '))"
    .venv/bin/nox -s "$name" || failed+=("nox -s $name")
  fi
  phase "nox -s $name done"
  if [[ -n "${IVRA_PRUNE_ENVS:-}" ]]; then rm -rf ".nox/$name"; fi
}
if [[ -z "${IVRA_SKIP_ENVS:-}" ]]; then
  if [[ -n "$BUILDER" ]]; then
    wait_built lerobot || true  # the core suite's cross-environment tests use it (they skip, saying why, without)
  elif ! [[ -x .nox/lerobot/bin/python ]]; then
    phase "building the lerobot environment (the core suite's cross-environment tests use it)"
    .venv/bin/nox -s lerobot --install-only || failed+=("nox -s lerobot (build)")
  fi
fi
phase "pytest (core environment)"
.venv/bin/python -m pytest --durations=25 "$@" || failed+=("core pytest")
phase "core pytest done"
if [[ -z "${IVRA_SKIP_ENVS:-}" ]]; then
  for name in "${ENVS[@]}"; do
    env_session "$name"
  done
  if [[ -n "$BUILDER" ]]; then wait "$BUILDER" || true; fi
fi
if [[ -n "${IVRA_PRUNE_ENVS:-}" ]]; then rm -rf .cache/uv; fi
if (( ${#failed[@]} )); then
  phase "FAILED: ${failed[*]}" >&2
  exit 1
fi
phase "all suites passed"
