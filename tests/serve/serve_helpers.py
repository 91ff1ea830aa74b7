"""Helpers of the ``ivra serve`` tests (a unique module name: every conftest.py of the tree is "conftest")."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("openpi_driver.py")


def openpi_python() -> Path | None:
    """The interpreter of the openpi-client environment: $IVRA_OPENPI_PYTHON or <repo>/.venv-openpi."""
    env = os.environ.get("IVRA_OPENPI_PYTHON")
    cand = [Path(env)] if env else [ROOT / ".venv-openpi" / "bin" / "python"]
    for c in cand:
        if c.exists():
            return c
    return None


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


def start(policy, spec=None, **opts):
    from ivra.serve.server import PolicyServer, ServeOptions, ServerThread

    opts.setdefault("port", 0)
    server = PolicyServer(policy, ServeOptions(**opts), spec)
    return ServerThread(server).start()


def no_second_environment(reason: str):
    """Skip a cross-environment test when the lerobot environment is missing, except under the test command
    (scripts/test.sh sets IVRA_CROSS_ENV_REQUIRED=1 once it built that environment): there it fails."""
    import os

    import pytest

    if os.environ.get("IVRA_CROSS_ENV_REQUIRED"):
        pytest.fail(f"{reason} (IVRA_CROSS_ENV_REQUIRED: scripts/test.sh built it for this run)")
    pytest.skip(reason)
