"""Fixtures of the ``ivra serve`` tests: servers on 127.0.0.1 (ephemeral ports) stopped by the test, the openpi
client environment, observations from the real tabletop benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("openpi_driver.py")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def openpi_python() -> Path | None:
    """The interpreter of the openpi-client environment: $IVRA_OPENPI_PYTHON or <repo>/.venv-openpi."""
    env = os.environ.get("IVRA_OPENPI_PYTHON")
    cand = [Path(env)] if env else [ROOT / ".venv-openpi" / "bin" / "python"]
    for c in cand:
        if c.exists():
            return c
    return None


@pytest.fixture(scope="session")
def openpi_py() -> Path:
    py = openpi_python()
    if py is None:
        pytest.skip(
            "the openpi-client environment is missing: run `bash scripts/setup_openpi_client.sh` "
            "(or set IVRA_OPENPI_PYTHON)"
        )
    return py


def run_openpi(py: Path, url: str, tmp: Path, images, prompts, clients=1, ivra=None, api_key=None, **extra):
    """Drive a server with the PyPI openpi-client from its own environment; returns (actions, meta)."""
    arrays = {"images": np.asarray(images, dtype=np.uint8)}
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    meta = {"prompts": list(prompts)}
    if ivra is not None:
        meta["ivra"] = ivra
    src, out = tmp / "obs.npz", tmp / "out.npz"
    np.savez(src, meta=json.dumps(meta), **arrays)
    cmd = [
        str(py),
        str(DRIVER),
        "--url",
        url,
        "--obs",
        str(src),
        "--clients",
        str(clients),
        "--out",
        str(out),
    ]
    if api_key:
        cmd += ["--api-key", api_key]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        raise AssertionError(f"openpi driver failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    data = np.load(out)
    return data["actions"], json.loads(str(data["meta"]))


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


def start(policy, spec=None, **opts):
    from ivra.serve.server import PolicyServer, ServeOptions, ServerThread

    opts.setdefault("port", 0)
    server = PolicyServer(policy, ServeOptions(**opts), spec)
    return ServerThread(server).start()


__all__ = ["run_openpi", "start", "sys"]
