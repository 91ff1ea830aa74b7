"""uv's settings from this machine's pip configuration (stdlib only; the set-up scripts and noxfile.py use it).

uv reads neither pip.conf nor ``PIP_*`` variables. A machine's pip may be configured with package sources that
uv would then miss (here: a local wheel directory in ``PIP_FIND_LINKS`` and two local simple indexes in
``/etc/xdg/pip/pip.conf``) and with a constraints file. This reads what ``pip config list`` reports (files and
``PIP_*`` variables alike) and gives uv the same sources and constraints:

    find-links      -> UV_FIND_LINKS         index-url -> UV_DEFAULT_INDEX
    extra-index-url -> UV_EXTRA_INDEX_URL    constraint -> UV_CONSTRAINT

plus ``UV_INDEX_STRATEGY=unsafe-best-match`` (pip's rule: the best version from any source; uv's default would
stop at the first index that has a package at all), ``UV_CACHE_DIR=<checkout>/.cache/uv`` (one download and one
unpacked copy of each wheel for every environment of a run; ``IVRA_PRUNE_ENVS=1`` deletes it with them) and
``UV_PYTHON_DOWNLOADS=never`` (interpreters come from pyenv or PATH) and ``UV_COMPILE_BYTECODE=1`` (pip's default:
each installed module compiled once, at install; uv's own default leaves that to the first import, and where
``PYTHONDONTWRITEBYTECODE`` is set, as on this project's 2-core machine, every process then compiles torch's, LIBERO's
and robosuite's sources again: about 3 s of a 25-s ``ivra eval libero`` run). A variable already set wins.

    eval "$(python3 scripts/uv_env.py)"      # shell: export lines
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UV_VERSION = "0.13.8"  # the PyPI uv every set-up script installs (scripts/setup.sh)

# pip option -> uv variable (values joined with spaces, which uv reads as a list for these variables)
_MAP = {
    "find-links": "UV_FIND_LINKS",
    "extra-index-url": "UV_EXTRA_INDEX_URL",
    "index-url": "UV_DEFAULT_INDEX",
    "constraint": "UV_CONSTRAINT",
}


def pip_config(python: str = sys.executable) -> dict[str, list[str]]:
    """pip's configured values per option, from ``pip config list`` (``section.option='value'`` lines, the
    environment's ``PIP_*`` variables as ``:env:.option``); an option set in several places keeps every value."""
    try:
        out = subprocess.run(
            [python, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        option = key.rsplit(".", 1)[-1]
        if option not in _MAP:
            continue
        for item in shlex.split(value.strip().strip("'\"").replace("\\n", " ")):
            if item not in found.setdefault(option, []):
                found[option].append(item)
    return found


def uv_environment(python: str = sys.executable, root: Path = ROOT) -> dict[str, str]:
    """The UV_* variables to set (those already in the environment are left out: they win)."""
    env = {
        "UV_INDEX_STRATEGY": "unsafe-best-match",
        "UV_CACHE_DIR": str(root / ".cache" / "uv"),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
        "UV_COMPILE_BYTECODE": "1",
    }
    for option, values in pip_config(python).items():
        env[_MAP[option]] = " ".join(values)
    return {k: v for k, v in env.items() if k not in os.environ}


if __name__ == "__main__":
    for key, value in uv_environment().items():
        print(f"export {key}={shlex.quote(value)}")
