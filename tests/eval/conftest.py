"""Fixtures of the evaluation tests: LIBERO availability (skip with the reason), subprocess environments."""

from __future__ import annotations

import importlib.util

import pytest

from ivra.eval.libero.install import SETUP_CMD, child_env


def libero_missing_reason() -> str | None:
    missing = [m for m in ("libero", "robosuite", "mujoco") if importlib.util.find_spec(m) is None]
    if missing:
        return f"LIBERO not installed (missing {', '.join(missing)}); install with: {SETUP_CMD}"
    from ivra.eval.libero.install import assets_dir

    if assets_dir() is None:
        return f"LIBERO assets not installed; install with: {SETUP_CMD}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = libero_missing_reason()
    ray_missing = importlib.util.find_spec("ray") is None
    for item in items:
        if reason and "libero" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
        if ray_missing and "ray" in item.keywords:
            item.add_marker(
                pytest.mark.skip(
                    reason="ray not installed: .venv/bin/pip install -r requirements/libero-ray.txt"
                )
            )


@pytest.fixture
def subprocess_env():
    """Environment for child pythons: finds this ivra, no progress bars, single-threaded BLAS."""
    return child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
