#!/usr/bin/env bash
# The test command: set up .venv (core + test tools + the LIBERO simulator), lint, then every suite: the core suite
# (its cross-environment serve tests use the lerobot environment) and the pinned environments' (nox: lerobot,
# openvla, llara, flower).
# Every environment is created and filled with uv (scripts/uv.sh: a pinned uv from PyPI, this machine's pip
# sources, one wheel cache in .cache/uv for all of them). The pinned environments (.nox/<name>, several GB each)
# are built one after the other in the background from the start (lerobot first: the core suite waits for it), then
# their suites run one after the other on the built environments (nox -R), still in the background, while the core
# suite runs on two workers (pytest-xdist): two cores, three CPU-bound processes, no core left idle. Logs of the
# background steps: .nox/logs/<name>.{build,suite}.log (each suite's end is printed at the end).
#   IVRA_SKIP_LIBERO=1 bash scripts/test.sh   # without installing LIBERO (its tests then skip, saying why)
#   IVRA_SKIP_OPENPI=1 ...                   # without the openpi-client environment (tests/serve parity tests skip)
#   IVRA_SKIP_ENVS=1 bash scripts/test.sh     # the core suite only
#   IVRA_PRUNE_ENVS=1 ...                    # delete the pinned environments and uv's wheel cache once every
#                                            # suite ran (as CI does)
# One environment alone: .venv/bin/nox -s NAME (builds it, runs its suite).
# Every suite runs even when an earlier one failed; the exit code is non-zero if any failed.
# Extra arguments go to the core pytest run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS=0
phase() { echo "== [${SECONDS}s] $*"; }
phase "disk free at $ROOT: $(df -h --output=avail . | tail -1 | tr -d ' ') (the full run needs about 20 GB)"
bash scripts/setup.sh dev
source scripts/uv.sh

if [[ -z "${IVRA_SKIP_LIBERO:-}" ]]; then
  IVRA_APT_ONLY=1 bash scripts/setup_libero.sh  # the renderer's apt packages, before anything runs in parallel
  export IVRA_SKIP_APT=1
fi
# one thread per process for OpenMP/BLAS: two xdist workers, an environment's suite and the children they start
# share two cores (more threads than cores only spin)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
ENVS=(lerobot openvla llara flower)
mkdir -p .nox/logs
step() {  # step NAME KIND CMD...: run a command into .nox/logs/NAME.KIND.log; its exit status and seconds in .status
  local name=$1 kind=$2 t0=$SECONDS rc=0
  shift 2
  rm -f ".nox/logs/$name.$kind.status"
  "$@" >".nox/logs/$name.$kind.log" 2>&1 || rc=$?
  echo "$rc $((SECONDS - t0))" >".nox/logs/$name.$kind.status"
  return 0
}
pinned_envs() {  # every environment built (install phase only), then every suite on its built environment
  for name in "${ENVS[@]}"; do step "$name" build .venv/bin/nox -s "$name" --install-only; done
  for name in "${ENVS[@]}"; do
    if [[ "$(cut -d' ' -f1 ".nox/logs/$name.build.status")" == 0 ]]; then
      step "$name" suite .venv/bin/nox -s "$name" -R
    else
      echo "1 0" >".nox/logs/$name.suite.status"
    fi
  done
}
wait_for() {  # wait_for NAME KIND: until that step ended (or the background job died); its exit status
  local f=".nox/logs/$1.$2.status"
  while [[ ! -f "$f" ]]; do
    kill -0 "$PINNED" 2>/dev/null || [[ -f "$f" ]] || { echo "1 0" >"$f"; break; }
    sleep 2
  done
  local rc secs
  read -r rc secs <"$f"
  phase "$1 $2: exit $rc after ${secs}s (log: .nox/logs/$1.$2.log)"
  return "$rc"
}
PINNED=""
trap 'if [[ -n "$PINNED" ]]; then kill "$PINNED" 2>/dev/null || true; fi' INT TERM
if [[ -z "${IVRA_SKIP_ENVS:-}" ]]; then
  phase "pinned environments in the background: build ${ENVS[*]}, then their suites (logs: .nox/logs)"
  rm -f .nox/logs/*.status
  pinned_envs &
  PINNED=$!
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
if [[ -n "$PINNED" ]]; then
  # the core suite's cross-environment tests use it: with it built, they may not skip
  if wait_for lerobot build; then export IVRA_CROSS_ENV_REQUIRED=1; else failed+=("nox -s lerobot (build)"); fi
fi
phase "pytest (core environment, 2 workers)"
# each test file (each doc page) on one worker, the longest first (tests/conftest.py); per-test times in the XML
.venv/bin/python -m pytest -n 2 --no-loadscope-reorder --durations=25 \
  --junit-xml=.nox/logs/core-junit.xml "$@" || failed+=("core pytest")
phase "core pytest done"
if [[ -n "$PINNED" ]]; then
  for name in "${ENVS[@]}"; do
    if [[ "$name" != lerobot ]]; then wait_for "$name" build || failed+=("nox -s $name (build)"); fi
  done
  for name in "${ENVS[@]}"; do
    wait_for "$name" suite || failed+=("nox -s $name")
    echo "---- nox -s $name: the end of .nox/logs/$name.suite.log"
    grep -v "WARNING: Location" ".nox/logs/$name.suite.log" | tail -n 25
  done
  wait "$PINNED" || true
fi
# pruned only now: the core suite's cross-environment tests use the lerobot environment until it ends (and the
# environments share their files with uv's cache, so an earlier prune would free little)
if [[ -n "${IVRA_PRUNE_ENVS:-}" ]]; then
  for name in "${ENVS[@]}"; do rm -rf ".nox/$name"; done
  rm -rf .cache/uv
fi
if (( ${#failed[@]} )); then
  phase "FAILED: ${failed[*]}" >&2
  exit 1
fi
phase "all suites passed"
