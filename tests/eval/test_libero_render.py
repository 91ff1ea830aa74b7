"""Render on demand (ivra.eval.libero.render) changes no result: every recorded field of an episode (success,
steps, reward, the digest of every executed action, chunks, IVRA counters, instruction, ...) is the same with the
cameras rendered for every step (``render="every"``, LIBERO's own behaviour) and only for the observations a policy
reads (``"demand"``, the default), on the real simulator and renderer: a single-step policy, a chunk policy with
execute lengths 1, 3 and 5 (the sim policy's actions are a function of the image, so a blank image read by mistake
would change them), K=3 lanes in lockstep with mixed arms and no wait steps (the initial state's image is read), each
protocol preset's seeding and a LIBERO-PRO perturbed suite. And it does skip: fewer images rendered."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHILD = r"""
import json, sys
from ivra.eval.libero import render, renderer
from ivra.eval.libero.install import ensure_config
from ivra.eval.libero.job import LiberoConfig, LiberoJob, make_units
from ivra.policies.registry import build_policy

ensure_config()
backend, _ = renderer.choose()
arms = {"baseline": None, "ivra": {"layer": 2, "lam": 0.5}}
three = make_units("libero_spatial", [0], [0], ["baseline", "ivra"]) + make_units("libero_spatial", [1], [1], ["baseline"])
SIM = "sim"
cases = [  # name, policy, kwargs, execute, lockstep, units, config overrides
    ("single-step tiny-vla", "tiny-vla", {}, None, 1, make_units("libero_spatial", [0], [0], ["ivra"]),
     {"protocol": "ivra"}),
    ("chunks of 4, execute 1", SIM, {"chunk": 4}, 1, 1, make_units("libero_spatial", [1], [1], ["ivra"]), {}),
    ("chunks of 4, execute 3, K=3, no wait steps", SIM, {"chunk": 4}, 3, 3, three, {"wait_steps": 0}),
    ("openvla preset: task seeding", SIM, {"chunk": 4}, 4, 1, make_units("libero_spatial", [0], [1], ["ivra"], seed=7),
     {"protocol": "openvla", "env_seeding": "task", "env_seed": 7}),
    ("openpi preset: task seeding, execute 5", SIM, {"chunk": 8}, 5, 1,
     make_units("libero_spatial", [1], [1], ["baseline"], seed=7), {"protocol": "openpi", "env_seeding": "task", "env_seed": 7}),
    ("lerobot preset, LIBERO-PRO swap suite", SIM, {"chunk": 4}, 2, 1, make_units("libero_spatial_swap", [0], [0], ["ivra"]),
     {"protocol": "lerobot", "suite": "libero_spatial_swap", "wait_steps": 1}),
]
jobs, out = {}, []
for name, policy, kwargs, execute, k, units, over in cases:
    policy_obj = build_policy(policy, dict(kwargs, fixed_ms=0, per_sample_ms=0) if policy == SIM else kwargs)
    res = {}
    for mode in ("every", "demand"):
        fields = dict(policy=policy, arms=arms, max_steps=6, wait_steps=2, resolution=64, mujoco_gl=backend,
                      execute_steps=execute, torch_threads=1, render=mode)
        fields.update(over)
        cfg = LiberoConfig(**fields)
        pool = jobs.get(cfg.suite)
        job = LiberoJob(cfg, policy=policy_obj, simulators_from=pool)
        if pool is None:
            job.setup()
        render.install()  # count the renders of both modes
        before = render.counts()
        results = [r for i in range(0, len(units), k) for r in job.run_lockstep(units[i : i + k])]
        after = render.counts()
        for r in results:
            if isinstance(r, BaseException):
                raise r
            r.pop("_meta")
        res[mode] = {"results": results, "rendered": after["rendered"] - before["rendered"],
                     "skipped": after["skipped"] - before["skipped"]}
        jobs[cfg.suite] = job
    out.append({"case": name, **res})
for job in jobs.values():
    job.teardown()
print("RESULT " + json.dumps(out))
"""


@pytest.mark.libero
@pytest.mark.slow
def test_render_on_demand_changes_no_recorded_field(subprocess_env):
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=subprocess_env, capture_output=True, text=True, timeout=900,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cases = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert len(cases) == 6
    for case in cases:
        every, demand = case["every"], case["demand"]
        assert demand["results"] == every["results"], case["case"]  # every field of every episode
        assert every["skipped"] == 0 and demand["skipped"] > 0, case
        assert demand["rendered"] < every["rendered"], case
        for r in every["results"]:
            assert r["steps"] == 6 or r["success"], case["case"]
    by = {c["case"]: c["demand"]["results"] for c in cases}
    # the sim policy reads the image: IVRA's arm and the episode seed show in the actions (the digest can differ)
    sims = by["chunks of 4, execute 3, K=3, no wait steps"]
    assert len({r["actions_sha1"] for r in sims}) == 3
    assert [r["chunks"] for r in sims] == [2, 2, 2]
    assert [r["chunks"] for r in by["chunks of 4, execute 1"]] == [6]
    assert by["openpi preset: task seeding, execute 5"][0]["chunks"] == 2
    assert by["lerobot preset, LIBERO-PRO swap suite"][0]["perturbation"] == "swap"


def test_render_mode_is_checked():
    from ivra.eval.libero import render

    with pytest.raises(ValueError, match="render mode 'sometimes': expected one of demand, every"):
        render.check_mode("sometimes")
    assert not render.skipping()
    with render.unread():
        assert render.skipping()
        with render.unread(False):
            assert render.skipping()  # an inactive inner block leaves the outer one in force
    assert not render.skipping()
