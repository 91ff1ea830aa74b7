"""Fixtures of the evaluation tests: LIBERO availability (skip with the reason), subprocess environments."""

from __future__ import annotations

import importlib.util
import os

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


@pytest.fixture(scope="session")
def spatial_sims():
    """``spatial_sims(n)``: n real LIBERO simulators of libero_spatial task 0 at 32x32 px, built once per session and
    shared by the tests that drive simulators directly (one takes seconds to build); each test resets what it uses."""
    envs: list = []

    def get(n: int) -> list:
        if not envs:
            from ivra.eval.libero import renderer
            from ivra.eval.libero.install import ensure_config, import_libero

            ensure_config()
            import_libero()
            renderer.choose()
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        task = benchmark.get_benchmark_dict()["libero_spatial"]().get_task(0)
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        while len(envs) < n:
            envs.append(OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=32, camera_widths=32))
        return envs[:n]

    yield get
    for env in envs:
        env.close()
