# Sourced by the set-up scripts: $UV, a pinned uv from PyPI (installed on first use into .cache/, never assumed
# on the machine), and uv's settings from this machine's pip configuration (scripts/uv_env.py: the same package
# sources and constraints as pip, one wheel cache for every environment of the checkout: .cache/uv).
# Expects $ROOT (the checkout).
UV_PIN="$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import uv_env; print(uv_env.UV_VERSION)' "$ROOT/scripts")"
UV="$ROOT/.cache/uv-$UV_PIN/bin/uv"
if [[ ! -x "$UV" ]]; then
  echo "== installing uv $UV_PIN (PyPI) into .cache/uv-$UV_PIN"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$ROOT/.cache/uv-$UV_PIN" "uv==$UV_PIN"
fi
eval "$(python3 "$ROOT/scripts/uv_env.py")"
export UV  # nox's uv backend (noxfile.py) and the scripts it runs use this uv
