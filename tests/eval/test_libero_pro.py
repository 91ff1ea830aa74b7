"""LIBERO-PRO robustness runs and protocol presets through ``ivra eval libero`` (real LIBERO, tiny policies, a few
steps): a perturbed suite's episode and its instruction, a base suite and two perturbation families in one paired
A/B (in lockstep) with the per-family table, ``--protocol lerobot`` recorded, the task-wide seeding of OpenVLA and
openpi replayed per unit, and bad values refused in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ivra.eval.journal import Journal
from ivra.eval.libero import protocol


def _ivra(args, env, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "ivra.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )  # fmt: skip


def _bddl_language(suite: str, task_id: int) -> tuple[str, str]:
    """(the registry's ``task.language``, the ``(:language ...)`` line of the task's BDDL file)."""
    from ivra.eval.libero.install import ensure_config, import_libero

    ensure_config()
    import_libero()
    from libero.libero import benchmark, get_libero_path

    task = benchmark.get_benchmark_dict()[suite]().get_task(task_id)
    path = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    (line,) = [x for x in open(path) if "(:language" in x]
    return task.language, re.search(r"\(:language\s+(.*)\)", line).group(1).strip().strip('"')


@pytest.mark.parametrize(
    "extra, needle",
    [
        (
            ["--suite", "libero_spatial", "--perturbations", "nope"],
            "--perturbations 'nope': expected all or some of",
        ),
        (
            ["--suite", "libero_90", "--perturbations", "swap"],
            "suite libero_90 has no LIBERO-PRO perturbations",
        ),
        (["--suite", "libero_spatial", "--protocol", "nope"], "'nope'"),
        (["--suite", "libero_spatial_nope"], "'libero_spatial_nope'"),
    ],
)
def test_bad_values_are_one_line_exit_2(extra, needle, subprocess_env):
    proc = _ivra(["eval", "libero", *extra, "--max-steps", "1"], subprocess_env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_preset_deviations_name_the_preset():
    lerobot = protocol.preset("lerobot")
    assert lerobot.steps("libero_spatial_swap") == 280 and lerobot.resolution == 360 and lerobot.seed == 1000
    full = protocol.deviations(
        "libero_spatial", list(range(10)), list(range(50)), 280, 10, 360, preset=lerobot
    )
    assert full == []
    devs = protocol.deviations(
        "libero_spatial", list(range(10)), list(range(50)), 280, 10, 64, preset=lerobot
    )
    assert devs == ["render resolution: 64x64 instead of 360x360 (protocol lerobot)"]
    # the community protocol (ivra) would call 280 steps a deviation
    assert protocol.deviations("libero_spatial", list(range(10)), list(range(50)), 280, 10, 256)


@pytest.mark.libero
def test_perturbations_ab_in_lockstep_reports_one_row_per_family(tmp_path, subprocess_env):
    """docs/libero.md's robustness A/B, its command as written there at the block's test size (the block itself
    is not run twice): the base suite and two families, tiny-vla, lerobot's protocol, two episodes at a time in lockstep
    (inline)."""
    from docs_examples import ivra_command, with_option

    out = tmp_path / "pro"
    cmd = with_option(ivra_command("docs/libero.md", "--perturbations"), "--out", str(out))
    proc = _ivra(cmd, subprocess_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    suites = ["libero_spatial", "libero_spatial_swap", "libero_spatial_lan"]
    assert manifest["suites"] == suites and manifest["base_suite"] == "libero_spatial"
    assert manifest["perturbations"] == ["swap", "lan"] and manifest["preset"]["name"] == "lerobot"
    assert manifest["protocol"]["instruction_source"]["libero_spatial_lan"] == "bddl"
    recs = list(Journal(out / "journal.jsonl").final_records().values())
    assert len(recs) == 3 * 1 * 2 and all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    res = {(r["result"]["suite"], r["unit"]["init_state"], r["unit"]["arm"]): r["result"] for r in recs}
    registry, bddl = _bddl_language("libero_spatial_lan", 0)
    assert registry != bddl
    for (suite, state, arm), r in res.items():
        assert r["perturbation"] == protocol.perturbation(suite)
        assert r["seed"] == 1000 + state and r["steps"] == 3  # lerobot's seeds: 1000 + the episode's index
        assert r["instruction"] == (bddl if suite == "libero_spatial_lan" else registry)
        # the same unit in every suite: same task, initial state, seed and arm
        assert r["seed"] == res[("libero_spatial", state, arm)]["seed"]
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["robustness"]
    assert [(r["perturbation"], r["suite"], r["n"]) for r in rows] == [
        ("none", "libero_spatial", 1),
        ("swap", "libero_spatial_swap", 1),
        ("lan", "libero_spatial_lan", 1),
    ]
    report = (out / "report.md").read_text()
    assert "## Robustness (LIBERO-PRO)" in report and "protocol: lerobot (" in report
    for r in rows:
        assert f"| {r['perturbation']} | {r['suite']} | baseline | ivra | 1 |" in report


@pytest.mark.libero
def test_protocol_lerobot_is_recorded(tmp_path, subprocess_env):
    out = tmp_path / "lerobot"
    cmd = ["eval", "libero", "--suite", "libero_spatial_swap", "--protocol", "lerobot", "--tasks", "0", "--init-states", "1", "--max-steps", "2", "--wait-steps", "1", "--no-progress", "--out", str(out)]  # fmt: skip
    proc = _ivra(cmd, subprocess_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preset"] == json.loads(json.dumps(protocol.preset("lerobot").to_dict()))
    assert manifest["protocol"]["max_steps"] == 280 and manifest["protocol"]["base_suite"] == "libero_spatial"
    assert manifest["protocol"]["perturbation"] == "swap"
    assert manifest["config"]["resolution"] == 360 and manifest["seed"] == 1000
    devs = manifest["deviations"]
    assert "max steps: 2 instead of 280 for libero_spatial (protocol lerobot)" in devs
    assert "wait steps: 1 instead of 10 (protocol lerobot)" in devs
    assert not any("resolution" in d or "seed" in d for d in devs)
    (rec,) = Journal(out / "journal.jsonl").final_records().values()
    assert rec["status"] == "ok" and rec["result"]["seed"] == 1001 and rec["result"]["perturbation"] == "swap"
    report = (out / "report.md").read_text()
    assert "- protocol: lerobot (lerobot 0.6.1" in report


@pytest.fixture(scope="module")
def task_seeded_loop(spatial_sims):
    """OpenVLA's / openpi's loop on a libero_spatial task 0 simulator: seed once (openpi's 7), then reset + initial
    state per episode in order; (initial states, the observations at the start of episodes 0, 1, 2)."""
    from libero.libero import benchmark

    (env,) = spatial_sims(1)
    init = benchmark.get_benchmark_dict()["libero_spatial"]().get_task_init_states(0)
    env.seed(7)
    return init, [(env.reset(), env.set_init_state(init[k]))[1] for k in range(3)]


@pytest.mark.libero
def test_task_seeding_replays_a_loop_that_seeds_once_per_task(spatial_sims, task_seeded_loop):
    """Episode 2 of the loop, replayed alone (seed, two resets, its own), starts where the loop's did: the same
    object positions and the same camera images (the initial state fixes the positions; what the earlier resets
    drew shows in the images only, so a replay with one reset too few gives other images)."""
    import numpy as np

    from ivra.eval.libero.job import reset_to

    init, loop = task_seeded_loop
    (env,) = spatial_sims(1)
    replay = reset_to(env, init[2], "task", seed=123, env_seed=7, index=2)
    keys = [k for k in loop[2] if k.endswith("_pos") and k != "robot0_joint_pos"]
    assert "robot0_eef_pos" in keys and len(keys) > 3, keys
    for k in [*keys, "agentview_image", "robot0_eye_in_hand_image"]:
        np.testing.assert_array_equal(replay[k], loop[2][k], err_msg=k)
    # the comparison can fail: episode 0's start differs from episode 2's, in positions and in images
    assert any(not np.array_equal(loop[0][k], loop[2][k]) for k in keys)
    assert not np.array_equal(loop[1]["agentview_image"], loop[2]["agentview_image"])


@pytest.mark.libero
def test_a_task_seeded_presets_seed_reaches_the_simulator(tmp_path, task_seeded_loop):
    """`--protocol openpi` (task seeding, seed 7): the episode of initial state 1 starts from the image openpi's own
    loop sees there, so a policy that acts on the image (sim) answers the action it answers on the loop's image."""
    from ivra.episodes import chunk_seed
    from ivra.eval.libero.job import actions_digest, policy_observation
    from ivra.eval.libero.run import run_libero
    from ivra.policies.sim import SimLatencyPolicy

    _, loop = task_seeded_loop
    res = run_libero("libero_spatial", policy="sim", policy_instance=SimLatencyPolicy(0, 0, chunk=5), protocol_name="openpi", tasks=[0], init_states=[1], max_steps=1, wait_steps=0, resolution=32, executor="inline", out=tmp_path, progress=False)  # fmt: skip
    (rec,) = res["records"]
    r = rec["result"]
    assert rec["status"] == "ok" and r["seed"] == 8 and r["steps"] == 1
    assert (res["manifest"]["config"]["env_seeding"], res["manifest"]["config"]["env_seed"]) == ("task", 7)

    def first_action(obs):
        return SimLatencyPolicy.expected_chunk(
            policy_observation(obs), r["instruction"], seed=chunk_seed(8, 0), chunk=5
        )[0]

    assert r["actions_sha1"] == actions_digest([first_action(loop[1])])
    assert r["actions_sha1"] != actions_digest([first_action(loop[2])])  # the image decides the action


@pytest.mark.libero
def test_a_task_suites_episode_gets_its_changed_instruction(tmp_path):
    """A ``_task`` suite changes the task, and its instruction with it: the episode gets the instruction of the
    suite's BDDL file (as the simulator parses it, in lower case), not the registry's (the
    unperturbed task's)."""
    from ivra.eval.libero.run import run_libero

    registry, bddl = _bddl_language("libero_spatial_task", 0)
    assert registry != bddl and "not between" in bddl, (registry, bddl)
    res = run_libero("libero_spatial_task", policy="zero", tasks=[0], init_states=[0], max_steps=1, wait_steps=0, resolution=32, executor="inline", out=tmp_path, progress=False)  # fmt: skip
    (rec,) = res["records"]
    r = rec["result"]
    assert (
        rec["status"] == "ok" and r["instruction"] == r["task"] and r["instruction"].lower() == bddl.lower()
    )
    assert res["manifest"]["protocol"]["instruction_source"] == {"libero_spatial_task": "bddl"}
