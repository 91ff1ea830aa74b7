#!/usr/bin/env bash
# Create .venv-openpi: the unmodified PyPI openpi-client (requirements/openpi-client.txt) in its own environment,
# used by tests/serve to talk to `ivra serve` exactly as a robot or openpi's LIBERO script would.
set -euo pipefail
ROOT="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # physical: environments always live in (and point to) the real checkout
cd "$ROOT"
PY="${PYTHON:-python3}"
REQ=requirements/openpi-client.txt
if [[ ! -x .venv-openpi/bin/python ]]; then
  echo "== creating .venv-openpi with $($PY --version)"
  "$PY" -m venv .venv-openpi
fi
STAMP=.venv-openpi/.stamp
HASH="$(sha256sum "$REQ" | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  echo "== .venv-openpi up to date"
  exit 0
fi
.venv-openpi/bin/python -m pip install -q --disable-pip-version-check -r "$REQ"
echo "$HASH" > "$STAMP"
echo "== .venv-openpi ready: $(.venv-openpi/bin/python -c 'import importlib.metadata as m, openpi_client; print("openpi-client", m.version("openpi-client"), "numpy", m.version("numpy"))')"
