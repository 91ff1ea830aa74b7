"""A policy served from another of this project's environments (lerobot's Python 3.12 / torch 2.11 /
transformers 5.5 env, issue 7's nox session) drives an evaluation running in this one.

The serving interpreter is ``$IVRA_CROSS_ENV_PYTHON`` or ``<repo>/.nox/lerobot/bin/python`` (``nox -s lerobot``
creates it); it needs ivra's dependencies (``websockets``, ``msgpack``: installed by the nox session from
pyproject.toml; ``$IVRA_CROSS_ENV_PYTHONPATH`` may add a folder holding them). The tests skip, saying why, when
that environment is missing, and the LIBERO test also when LIBERO is not installed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from serve_helpers import no_second_environment
from serve_procs import ROOT, serve_process

from ivra.config import IVRAConfig
from ivra.eval.executor import execute
from ivra.experiment.ab import TabletopABJob, make_units

EXTRA = os.environ.get("IVRA_CROSS_ENV_PYTHONPATH")


@pytest.fixture(scope="module")
def cross_python() -> Path:
    env = os.environ.get("IVRA_CROSS_ENV_PYTHON")
    py = Path(env) if env else ROOT / ".nox" / "lerobot" / "bin" / "python"
    if not py.exists():
        no_second_environment(
            f"no second environment at {py}: create lerobot's with `nox -s lerobot` (or set IVRA_CROSS_ENV_PYTHON)"
        )
    paths = [str(ROOT / "src")] + ([EXTRA] if EXTRA else [])
    probe = subprocess.run(
        [
            str(py),
            "-c",
            "import sys, websockets, msgpack, torch, transformers; print(sys.version.split()[0])",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        timeout=120,
    )
    if probe.returncode != 0:
        pytest.skip(f"{py} cannot run ivra serve: {probe.stderr.strip().splitlines()[-1]}")
    return py


def _version(py) -> str:
    return subprocess.run(
        [str(py), "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True
    ).stdout.strip()


def test_tabletop_ab_with_the_policy_in_another_environment(cross_python, low_policy, tmp_path):
    import sys

    assert _version(cross_python) != sys.version.split()[0] or os.environ.get("IVRA_CROSS_ENV_PYTHON")
    cfg = IVRAConfig(layer=2, lam=0.5).to_dict()
    units = make_units(["val"], 6, {"baseline": None, "ivra": cfg}, chunk=3)
    ref_job = TabletopABJob("low")
    ref_job._policy = low_policy[0]
    ref = execute(ref_job, units, tmp_path / "ref.jsonl", progress=False)
    with serve_process(cross_python, "--policy", "low", "--max-batch", "8", extra_path=EXTRA) as (
        url,
        proc,
        lines,
    ):
        recs = execute(TabletopABJob(url), units, tmp_path / "journal.jsonl", progress=False)
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    got = {r["key"]: [(e["seed"], e["success"], e["actions"]) for e in r["result"]["episodes"]] for r in recs}
    want = {r["key"]: [(e["seed"], e["success"], e["actions"]) for e in r["result"]["episodes"]] for r in ref}
    assert got == want  # same actions from torch 2.11 / Python 3.12 as in-process here


def test_libero_ab_with_the_policy_in_another_environment(cross_python, tmp_path):
    from ivra.eval.libero.install import LiberoMissing, ensure_config

    try:
        import libero  # noqa: F401

        ensure_config()
    except (ImportError, LiberoMissing) as exc:
        pytest.skip(f"LIBERO is not installed in this environment (bash scripts/setup_libero.sh): {exc}")
    from ivra.eval.libero.run import run_libero
    from ivra.policies.vla import DEFAULT_IVRA

    with serve_process(cross_python, "--policy", "tiny-vla", "--max-batch", "4", extra_path=EXTRA) as (
        url,
        proc,
        lines,
    ):
        res = run_libero(
            suite="libero_spatial",
            policy=url,
            arms={"baseline": None, "ivra": IVRAConfig(**DEFAULT_IVRA).to_dict()},
            tasks=[0],
            init_states=[0],
            max_steps=8,
            resolution=128,
            executor="local",
            workers=2,
            out=tmp_path / "run",
            progress=False,
        )
        port = url.rsplit(":", 1)[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
            stats = json.loads(r.read())
    recs = res["records"]
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    assert {r["result"]["arm"] for r in recs} == {"baseline", "ivra"}
    assert all(r["result"]["steps"] == 8 for r in recs)
    assert (tmp_path / "run" / "report.md").exists()
    assert res["manifest"]["policy_server"]["policy"] == "tiny-vla"  # what answered is in the manifest
    # every policy step of both arms went through the server, each with its own arm (8 steps, one episode each)
    assert stats["arms"] == {"baseline": 8, "layer=2,lam=0.3": 8}, stats
