#!/usr/bin/env bash
# Create/refresh the project's virtual environment at .venv (idempotent; a stamp skips unchanged installs).
#   bash scripts/setup.sh          # core: what `ivra demo` needs
#   bash scripts/setup.sh dev      # core + test tools (pytest, ruff, ray)
set -euo pipefail
ROOT="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # physical: environments always live in (and point to) the real checkout
cd "$ROOT"
KIND="${1:-core}"
REQ="requirements/$KIND.txt"
[[ -f "$REQ" ]] || { echo "error: unknown set-up '$KIND' (expected core or dev)" >&2; exit 2; }
PY="${PYTHON:-python3}"
source scripts/uv.sh
if [[ ! -x .venv/bin/python ]]; then
  echo "== creating .venv with $($PY --version) (uv)"
  "$UV" venv -q --seed -p "$(command -v "$PY")" .venv  # --seed: pip too, for a user's own installs
fi
STAMP=".venv/.ivra-$KIND.stamp"
HASH="$(cat requirements/core.txt "$REQ" pyproject.toml | sha256sum | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]] && .venv/bin/python -c "import ivra" 2>/dev/null; then
  echo "== .venv up to date ($KIND)"
  exit 0
fi
echo "== installing $REQ into .venv (uv)"
"$UV" pip install -q --python .venv/bin/python -r "$REQ"
"$UV" pip install -q --python .venv/bin/python --no-deps -e .
echo "$HASH" > "$STAMP"
echo "== .venv ready ($KIND): $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
