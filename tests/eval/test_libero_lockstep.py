"""K LIBERO episodes in lockstep in one worker give the episodes they give one at a time (real simulator, real
renderer): same success, steps, reward, executed actions (``actions_sha1``), chunks and IVRA counters; every unit
journaled as its own record; a failing lane is its unit's error while its batch mates finish."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivra.eval.journal import Journal

# One process, one set of simulators for every policy (LiberoJob(simulators_from=...)): each policy runs the units
# one at a time, then K at a time, and the results (without the timing in _meta) are printed for the test.
CHILD = r"""
import json, sys
from ivra.eval.libero import renderer
from ivra.eval.libero.install import ensure_config
from ivra.eval.libero.job import LiberoConfig, LiberoJob
from ivra.policies.registry import build_policy

ensure_config()
spec = json.loads(sys.argv[1])
backend, _ = renderer.choose()
out, shared = [], None
for name, kwargs, execute in spec["policies"]:
    policy = build_policy(name, kwargs)
    cfg = LiberoConfig(policy=name, arms=spec["arms"], max_steps=spec["max_steps"], wait_steps=spec["wait_steps"],
                       resolution=spec["resolution"], mujoco_gl=backend, execute_steps=execute, torch_threads=1)
    job = LiberoJob(cfg, policy=policy, simulators_from=shared)
    if shared is None:
        job.setup()
    units, k = spec["units"], spec["lockstep"]
    alone = [job.run_lockstep([u])[0] for u in units]
    together = [r for i in range(0, len(units), k) for r in job.run_lockstep(units[i : i + k])]
    for r in alone + together:
        if isinstance(r, BaseException):
            raise r
        r.pop("_meta")
    out.append({"policy": name, "kwargs": kwargs, "alone": alone, "together": together,
                "batch_sizes": getattr(policy, "batch_sizes", None)})
    shared = job
shared.teardown()
print("RESULT " + json.dumps(out))
"""

COMMON = ["--suite", "libero_spatial", "--resolution", "64", "--wait-steps", "2", "--no-progress"]


def _ivra(args, env, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "ivra.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )  # fmt: skip


def _units():
    """A pair on task 0 (seed 0) and a baseline on task 1 (seed 1): one K=3 batch mixes arms, tasks and seeds."""
    from ivra.eval.libero.job import make_units

    return make_units("libero_spatial", [0], [0], ["baseline", "ivra"]) + make_units(
        "libero_spatial", [1], [1], ["baseline"]
    )


@pytest.mark.libero
@pytest.mark.slow
def test_lockstep_episodes_equal_one_at_a_time(subprocess_env):
    """K=3 == K=1 for zero, tiny-vla greedy, tiny-vla sampling (seeded per chunk) and a chunk policy (sim, chunks
    of 4, 3 executed) whose lanes of both arms share one policy call."""
    arm = {"layer": 2, "lam": 0.5}
    spec = {
        "arms": {"baseline": None, "ivra": arm},
        "units": _units(),
        "lockstep": 3,
        "max_steps": 5,
        "wait_steps": 2,
        "resolution": 64,
        "policies": [
            ["zero", {}, None],
            ["tiny-vla", {}, None],
            ["tiny-vla", {"temperature": 5.0}, None],
            ["sim", {"fixed_ms": 0, "per_sample_ms": 0, "chunk": 4}, 3],
        ],
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)], env=subprocess_env, capture_output=True, text=True,
        timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    for run in runs:
        what = f"{run['policy']} {run['kwargs']}"
        assert run["together"] == run["alone"], (
            what
        )  # every field: success, steps, reward, digest, chunks, stats
        for r, unit in zip(run["alone"], spec["units"]):
            assert (r["task_id"], r["init_state"], r["arm"]) == (
                unit["task_id"],
                unit["init_state"],
                unit["arm"],
            )
            assert r["steps"] == 5 or r["success"], what
    zero, greedy, sampled, sim = ({r["arm"] + str(r["seed"]): r for r in run["alone"]} for run in runs)
    # the digest sees the actions: IVRA changes tiny-vla's, the episode seed changes the sampled ones
    assert greedy["baseline0"]["actions_sha1"] != greedy["ivra0"]["actions_sha1"]
    assert sampled["baseline0"]["actions_sha1"] != sampled["baseline1"]["actions_sha1"]
    assert zero["baseline0"]["actions_sha1"] == zero["baseline1"]["actions_sha1"]  # zero never moves
    # each IVRA episode's counters are its own: one edited prediction per step, 64 visual tokens each
    for res in (greedy, sampled):
        assert (
            res["ivra0"]["ivra_stats"] == {"calls": 5, "tokens": 5 * 64}
            and res["baseline0"]["ivra_stats"] is None
        )
    # the chunk policy: 5 steps executing 3 of each chunk of 4 = 2 chunks; both arms' lanes in one call of 3 rows
    assert {r["chunks"] for r in sim.values()} == {math.ceil(5 / 3)}
    assert sim["baseline0"]["actions_sha1"] != sim["ivra0"]["actions_sha1"]
    assert runs[3]["batch_sizes"].count(3) == 2  # K=3: the 2 chunks of 3 lanes, one call each


@pytest.mark.libero
@pytest.mark.slow
def test_lockstep_through_the_cli_journals_each_unit_and_resumes_with_any_k(tmp_path, subprocess_env):
    """docs/libero.md's `--lockstep 3 --execute-steps 5` command as written there at the block's test size (the
    block itself is not run twice): a chunk policy (chunks of 8) in a spawned worker, an A/B of two initial states.
    One record per unit (batches of 3 and 1) and a video per episode, the manifest records both options; a resume at
    K=1 reruns lost units to the same results; another --execute-steps is another configuration, one beyond the
    chunk is refused."""
    from docs_examples import ivra_command, with_option

    out = tmp_path / "k3"
    cmd = with_option(ivra_command("docs/libero.md", "--execute-steps"), "--out", str(out))
    assert with_option(cmd, "--lockstep", "3") == cmd and "--videos" in cmd  # the block's K, and a video per lane
    proc = _ivra(cmd, subprocess_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    assert "chunks of 8, 5 executed, 3 episodes in lockstep per worker" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lockstep"] == 3 and manifest["config"]["execute_steps"] == 5
    assert manifest["chunk"] == {"chunk_length": 8, "policy_execute_steps": 8, "execute_steps": 5}
    lines = Journal(out / "journal.jsonl").records()
    assert len(lines) == 4 and len({r["key"] for r in lines}) == 4 and all(r["status"] == "ok" for r in lines)
    assert sorted(r["meta"]["lockstep"]["size"] for r in lines) == [1, 3, 3, 3]
    assert len({r["meta"]["lockstep"]["batch"] for r in lines}) == 2
    assert all(r["result"]["chunks"] == 2 and r["result"]["steps"] == 6 for r in lines)
    assert all(
        (out / "episodes" / r["result"]["video"]).stat().st_size > 0 for r in lines
    )  # a video per lane
    assert len({r["result"]["video"] for r in lines}) == 4 and manifest["videos"]
    assert manifest["timing"]["env_steps_per_s_per_worker"] > 0
    # resume at K=1 after losing two records: the two episodes rerun alone give what they gave in the batch
    journal = (out / "journal.jsonl").read_text().splitlines()
    lost = {json.loads(x)["key"]: json.loads(x)["result"] for x in journal[:2]}
    (out / "journal.jsonl").write_text("\n".join(journal[2:]) + "\n")
    proc = _ivra(with_option(cmd, "--lockstep", "1"), subprocess_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = Journal(out / "journal.jsonl").records()[2:]
    assert {r["key"]: r["result"] for r in again} == lost
    assert all(r["meta"]["lockstep"]["size"] == 1 for r in again)
    assert json.loads((out / "manifest.json").read_text())["lockstep"] == 1
    proc = _ivra(with_option(cmd, "--execute-steps", "2"), subprocess_env)
    assert proc.returncode == 2 and "different configuration: --execute-steps: 5 -> 2;" in proc.stderr
    beyond = with_option(with_option(cmd, "--execute-steps", "9"), "--out", str(tmp_path / "x"))
    proc = _ivra(beyond, subprocess_env)
    assert proc.returncode == 2 and "--execute-steps 9: expected 1..8 (policy sim predicts chunks of 8" in proc.stderr


def _ab_pair_in_lockstep(policy: str, retries: int, out: Path, subprocess_env):
    """`ivra eval libero` of one A/B pair (3 steps) in lockstep, inline, with a policy of policy_helpers.py."""
    env = dict(subprocess_env)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env["PYTHONPATH"]])
    cmd = ["eval", "libero", *COMMON, "--tasks", "0", "--init-states", "0", "--max-steps", "3", "--policy", policy, "--ab", "--ivra", "layer=2", "--executor", "inline", "--lockstep", "2", "--retries", str(retries), "--out", str(out)]  # fmt: skip
    return _ivra(cmd, env)


@pytest.mark.libero
@pytest.mark.slow
def test_a_failing_lane_is_its_units_error_and_its_batch_mates_finish(tmp_path, subprocess_env):
    """An A/B whose IVRA arm raises at its first policy call, two episodes in lockstep: the baseline lane of the
    same batch finishes and is journaled ok; the IVRA unit is an error record, retried once (a later batch)."""
    out = tmp_path / "fail"
    proc = _ab_pair_in_lockstep("policy_helpers:FailsUnderIVRA", 1, out, subprocess_env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "arm ivra: 1 of 1 unit(s) failed" in proc.stderr and "this policy fails under IVRA" in proc.stderr
    lines = Journal(out / "journal.jsonl").records()
    base = [r for r in lines if r["unit"]["arm"] == "baseline"]
    bad = [r for r in lines if r["unit"]["arm"] == "ivra"]
    assert len(base) == 1 and base[0]["status"] == "ok" and base[0]["result"]["steps"] == 3
    assert [(r["attempt"], r["status"], r["final"]) for r in bad] == [(1, "error", False), (2, "error", True)]
    assert bad[0]["meta"]["lockstep"] == base[0]["meta"]["lockstep"]  # the same batch of two
    assert bad[1]["meta"]["lockstep"]["size"] == 1
    assert "RuntimeError: this policy fails under IVRA" in bad[1]["traceback"]


@pytest.mark.libero
def test_a_nonfinite_action_is_never_executed_and_is_its_episodes_error(tmp_path, subprocess_env):
    """A policy that answers NaN under IVRA from its second step: the IVRA episode ends in an error that names the
    policy, the step and the unit, before the simulator executes it; its batch mate (baseline) finishes."""
    out = tmp_path / "nan"
    proc = _ab_pair_in_lockstep("policy_helpers:NaNUnderIVRA", 0, out, subprocess_env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = Journal(out / "journal.jsonl").records()
    (base,) = [r for r in lines if r["unit"]["arm"] == "baseline"]
    (bad,) = [r for r in lines if r["unit"]["arm"] == "ivra"]
    assert base["status"] == "ok" and base["result"]["steps"] == 3
    assert bad["status"] == "error" and bad["final"] and bad["error"].startswith("NonFiniteAction: ")
    assert (
        "policy 'policy_helpers:NaNUnderIVRA' answered a non-finite action at step 1 of libero_spatial/t00"
        in bad["error"]
    )
    assert "it was not executed" in bad["error"]
    assert "arm ivra: 1 of 1 unit(s) failed" in proc.stderr


class _DoneAfter:
    """A real LIBERO simulator whose episode reports its goal reached from its ``n``-th step on (a success that no
    tiny policy reaches in a few steps); it counts the steps it was given. Everything else is the simulator's."""

    def __init__(self, env, n: int):
        self._env, self._n, self.steps = env, n, 0

    def __getattr__(self, name):
        return getattr(self._env, name)

    def reset(self):
        self.steps = 0
        return self._env.reset()

    def step(self, action):
        self.steps += 1
        obs, reward, done, info = self._env.step(action)
        return obs, reward, done or self.steps >= self._n, info


@pytest.mark.libero
def test_a_lane_that_succeeds_early_leaves_the_batch(spatial_sims):
    """Two episodes in lockstep (a policy that reads the image, both arms in one call), the first succeeding at its
    2nd step: it ends there (2 steps, its simulator stepped twice) and leaves the batch; the other runs its 4 steps
    alone (policy calls of 2, 2, then 1 and 1 rows)."""
    from ivra.eval.libero.job import LiberoConfig, LiberoJob, make_units
    from ivra.policies.sim import SimLatencyPolicy

    policy = SimLatencyPolicy(0, 0)
    arms = {"baseline": None, "ivra": {"layer": 2, "lam": 0.5}}
    cfg = LiberoConfig(policy="sim", arms=arms, max_steps=4, wait_steps=0, resolution=32, torch_threads=1)
    job = LiberoJob(cfg, policy=policy)
    job.setup()
    early, late = (_DoneAfter(env, n) for env, n in zip(spatial_sims(2), (2, 99)))
    for env in (late, early):  # idle simulators of the task, taken last in first out: lane 0 gets `early`
        job._release_env(("libero_spatial", 0), env)
    a, b = job.run_lockstep(make_units("libero_spatial", [0], [0], ["baseline", "ivra"]))
    assert (a["arm"], a["success"], a["steps"], early.steps) == ("baseline", True, 2, 2), a
    assert (b["arm"], b["success"], b["steps"], late.steps) == ("ivra", False, 4, 4), b
    assert policy.batch_sizes == [2, 2, 1, 1]
