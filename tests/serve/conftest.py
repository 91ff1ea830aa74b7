"""Fixtures of the ``ivra serve`` tests: servers on 127.0.0.1 (ephemeral ports) stopped by the test, the openpi
client environment, observations from the real tabletop benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from serve_helpers import openpi_python


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def openpi_py() -> Path:
    py = openpi_python()
    if py is None:
        pytest.skip(
            "the openpi-client environment is missing: run `bash scripts/setup_openpi_client.sh` "
            "(or set IVRA_OPENPI_PYTHON)"
        )
    return py


@pytest.fixture(scope="session")
def tabletop_obs():
    """12 observations of the validation split (96 px, what the shipped policy sees)."""
    from ivra.tabletop.env import TabletopEnv

    env = TabletopEnv(resolution=96, split="val")
    obs = []
    for seed in range(12):
        o, _ = env.reset(seed=seed)
        obs.append(o)
    return obs


@pytest.fixture(scope="session")
def low_policy():
    from ivra.serve.policies import load_policy

    return load_policy("low")
