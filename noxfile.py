"""One session per pinned environment; `bash scripts/test.sh` runs them after the core suite.

    .venv/bin/nox -s lerobot        # lerobot 0.6.1 (SmolVLA, pi0, pi0.5) on Python 3.12
    .venv/bin/nox -l                # list the sessions

Each session installs this package unchanged (``pip install -e .`` constrained by the environment's pins) and
runs the tests of its capability (``tests/envs/<name>``), which the core suite does not collect.
Environments live in ``.nox/<name>`` and are reused when their requirements did not change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lerobot"]

ROOT = Path(__file__).parent


def interpreter(version: str) -> str:
    """``python3.X`` on PATH, else pyenv's build of that minor version (this project's machines have pyenv)."""
    found = shutil.which(f"python{version}")
    if found:
        return found
    try:
        versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return version  # let nox report that it cannot find it
    for line in sorted(versions.stdout.split(), reverse=True):
        if line.startswith(f"{version}."):
            root = subprocess.run(["pyenv", "prefix", line], capture_output=True, text=True, check=True)
            return str(Path(root.stdout.strip()) / "bin" / f"python{version}")
    return version


def install_once(session: nox.Session, *requirement_files: str, extra: tuple[str, ...] = ()) -> None:
    """Install the pinned requirements unless this env already holds exactly them (a stamp in the env)."""
    digest = hashlib.sha256()
    for name in requirement_files:
        path = ROOT / "requirements" / name
        digest.update(path.read_bytes())
        for line in path.read_text().splitlines():  # include files referenced with -c / -r
            if line.startswith(("-c ", "-r ")):
                digest.update((path.parent / line.split()[1]).read_bytes())
    digest.update((ROOT / "pyproject.toml").read_bytes())
    stamp = Path(session.virtualenv.location) / ".ivra-stamp"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        session.log("environment up to date")
        return
    for name in requirement_files:
        session.install("--disable-pip-version-check", "-q", "-r", f"requirements/{name}", *extra)
    constraints = [a for name in requirement_files for a in ("-c", f"requirements/{name}")]
    session.install("--disable-pip-version-check", "-q", "-e", ".", *constraints)
    stamp.write_text(digest.hexdigest())


def pytest_args(session: nox.Session, name: str) -> list[str]:
    return ["python", "-m", "pytest", f"tests/envs/{name}", "-p", "no:cacheprovider", *session.posargs]


@nox.session(python=interpreter("3.12"))
def lerobot(session: nox.Session) -> None:
    """lerobot 0.6.1 (SmolVLA, pi0, pi0.5): adapters, policy wrappers, LIBERO episodes with tiny policies."""
    install_once(session, "lerobot.txt")
    if os.environ.get("IVRA_SKIP_LIBERO") is None:
        session.run(
            "bash",
            "scripts/setup_libero.sh",
            external=True,
            env={
                "IVRA_PYTHON": f"{session.virtualenv.location}/bin/python",
                "IVRA_LIBERO_CONSTRAINTS": "requirements/lerobot-constraints.txt",
            },
        )
    session.run(*pytest_args(session, "lerobot"), env={"IVRA_ENV": "lerobot"})
