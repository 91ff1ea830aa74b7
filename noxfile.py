"""One session per pinned environment; `bash scripts/test.sh` runs them around the core suite.

    .venv/bin/nox -s lerobot        # lerobot 0.6.1 (SmolVLA, pi0, pi0.5) on Python 3.12
    .venv/bin/nox -s openvla        # OpenVLA / OpenVLA-OFT's stack: timm 0.9.16, transformers 4.40.1, Python 3.11
    .venv/bin/nox -s llara          # LLaRA's LLaVA-1.5 code (llava-torch) on transformers 4.37.2, Python 3.11
    .venv/bin/nox -s flower         # FLOWER's stack: torch 2.13.0, transformers 4.51.3, timm, Python 3.11
    .venv/bin/nox -l                # list the sessions

Each session installs this package unchanged (``uv pip install -e .`` constrained by the environment's pins) and
runs the tests of its capability (``tests/envs/<name>``), which the core suite does not collect.
Environments live in ``.nox/<name>``, are created and filled with uv (the uv of ``scripts/uv.sh``, with this
machine's pip sources and one wheel cache in ``.cache/uv``: ``scripts/uv_env.py``) and are reused when their
requirements did not change. ``.venv/bin/nox -s NAME --install-only`` builds an environment without running its
tests (``scripts/test.sh`` builds the next environments that way while a suite runs).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT / "scripts"))
import uv_env  # noqa: E402  (scripts/uv_env.py: uv's settings from this machine's pip configuration)

os.environ.update(uv_env.uv_environment())
_UV = (
    ROOT / ".cache" / f"uv-{uv_env.UV_VERSION}" / "bin" / "uv"
)  # installed by scripts/uv.sh (scripts/setup.sh)
if "UV" not in os.environ and _UV.exists():
    os.environ["UV"] = str(_UV)  # nox's uv backend finds uv through $UV

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lerobot", "openvla", "llara", "flower"]


def _runs(exe: str) -> bool:
    try:
        return subprocess.run([exe, "-c", "import sys"], capture_output=True).returncode == 0
    except OSError:
        return False


def interpreter(version: str) -> str:
    """A working ``python3.X``: pyenv's build of that minor version, else one on PATH (pyenv's shims on PATH
    fail for versions that are not selected, so each candidate is tried)."""
    candidates = []
    try:
        versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True, check=True)
        for line in sorted(versions.stdout.split(), reverse=True):
            if line.startswith(f"{version}."):
                root = subprocess.run(["pyenv", "prefix", line], capture_output=True, text=True, check=True)
                candidates.append(str(Path(root.stdout.strip()) / "bin" / f"python{version}"))
    except (OSError, subprocess.CalledProcessError):
        pass
    found = shutil.which(f"python{version}")
    if found:
        candidates.append(found)
    for exe in candidates:
        if _runs(exe):
            return exe
    return version  # nox then reports that it cannot find it


def install_once(
    session: nox.Session,
    *requirement_files: str,
    extra: tuple[str, ...] = (),
    no_deps: tuple[str, ...] = (),
) -> None:
    """Install the pinned requirements unless this env already holds exactly them (a stamp in the env).

    ``no_deps``: requirement files installed afterwards with ``--no-deps`` (packages whose metadata pins
    versions their code does not need, e.g. llava-torch).
    """
    digest = hashlib.sha256()
    for name in (*requirement_files, *no_deps):
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
        session.install("-q", "-r", f"requirements/{name}", *extra)
    for name in no_deps:
        session.install("-q", "--no-deps", "-r", f"requirements/{name}")
    constraints = []  # the -c files the requirements name: ivra's own dependencies may not move those pins
    for name in requirement_files:
        for line in (ROOT / "requirements" / name).read_text().splitlines():
            if line.startswith("-c "):
                constraints += ["-c", f"requirements/{line.split()[1]}"]
    session.install("-q", "-e", ".", *constraints)
    stamp.write_text(digest.hexdigest())


def pytest_args(session: nox.Session, name: str) -> list[str]:
    return [
        "python",
        "-m",
        "pytest",
        f"tests/envs/{name}",
        "-p",
        "no:cacheprovider",
        "--durations=10",
        *session.posargs,
    ]


@nox.session(python=interpreter("3.12"))
def lerobot(session: nox.Session) -> None:
    """lerobot 0.6.1 (SmolVLA, pi0, pi0.5): adapters, policy wrappers, LIBERO episodes with tiny policies."""
    install_once(session, "lerobot.txt")
    libero(session, "requirements/lerobot-constraints.txt")
    session.run(*pytest_args(session, "lerobot"), env={"IVRA_ENV": "lerobot"})


def libero(session: nox.Session, constraints: str) -> None:
    """Install LIBERO into this session's env (skipped with IVRA_SKIP_LIBERO), as ``scripts/setup_libero.sh``; part
    of the install phase (``--install-only`` runs it)."""
    if os.environ.get("IVRA_SKIP_LIBERO") is None:
        session.run_install(
            "bash",
            "scripts/setup_libero.sh",
            external=True,
            env={
                "IVRA_PYTHON": f"{session.virtualenv.location}/bin/python",
                "IVRA_LIBERO_CONSTRAINTS": constraints,
                # scripts/test.sh installs the renderer's apt packages before it builds environments in parallel
                "IVRA_SKIP_APT": os.environ.get("IVRA_SKIP_APT", ""),
            },
        )


@nox.session(python=interpreter("3.11"))
def openvla(session: nox.Session) -> None:
    """OpenVLA / OpenVLA-OFT's stack: adapter on a rebuilt Prismatic model (real timm ViTs + Llama), wrapper."""
    install_once(session, "openvla.txt")
    libero(session, "requirements/openvla.txt")
    session.run(*pytest_args(session, "openvla"), env={"IVRA_ENV": "openvla"})


@nox.session(python=interpreter("3.11"))
def llara(session: nox.Session) -> None:
    """LLaRA: llava-torch's real LlavaLlamaForCausalLM on transformers 4.37.2; adapter and policy wrapper."""
    install_once(session, "llara.txt", no_deps=("llara-nodeps.txt",))
    # no LIBERO here: LLaRA acts in VIMA's 2-D pick/place action space, it has no LIBERO policy wrapper
    session.run(*pytest_args(session, "llara"), env={"IVRA_ENV": "llara"})


@nox.session(python=interpreter("3.11"))
def flower(session: nox.Session) -> None:
    """FLOWER's stack (torch 2.13.0, transformers 4.51.3): the rebuild held to the real code's facts, the flower and
    florence2 adapters, FlowerPolicy (FLOWER's own transforms) and a LIBERO A/B episode."""
    install_once(session, "flower.txt")
    libero(session, "requirements/flower.txt")
    session.run(*pytest_args(session, "flower"), env={"IVRA_ENV": "flower"})
