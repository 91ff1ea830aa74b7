"""ivra's inspect-robots plug-ins (src/ivra/integrations/inspect_robots.py) run by the real inspect-robots 0.60.0:
its CLI on its CubePick mock with 2-D ``zero`` / ``sim`` ivra policies, and a tabletop A/B of the shipped policy
whose episodes equal ivra's own in-process ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("inspect_robots")

from inspect_robots.rollout import derive_seed  # noqa: E402

from ivra.serve.blind import arm_of  # noqa: E402

BIN = Path(sys.executable).parent


def _env(tmp_path: Path) -> dict:
    # no user config, one thread: the run depends on its arguments only
    return {**os.environ, "INSPECT_ROBOTS_CONFIG": str(tmp_path / "absent.ini"), "OMP_NUM_THREADS": "1"}


def _cli(tmp_path: Path, *args: str, subprocess_run: bool = False, ok: bool = True) -> dict:
    """``inspect-robots run ARGS`` in tmp_path, through its console script (``subprocess_run``) or its CLI entry
    ``inspect_robots.cli.main`` in this process (torch and the models load once per test process); the EvalLog."""
    log_dir = tmp_path / f"logs{len(list(tmp_path.glob('logs*')))}"
    argv = ["run", "--no-prompt", "--log-dir", str(log_dir), *args]
    if subprocess_run:
        proc = subprocess.run(
            [str(BIN / "inspect-robots"), *argv], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        from inspect_robots.cli import main

        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(tmp_path)
            for k, v in _env(tmp_path).items():
                mp.setenv(k, v)
            assert (main(argv) == 0) == ok
    (log,) = log_dir.glob("*.json")
    return json.loads(log.read_text())


def _trials(log: dict) -> list[tuple[dict, int, dict, dict]]:
    """(sample, epoch, scores, trial metadata) of every trial."""
    return [
        (s, e, s["epochs"][e], s["trial_metadata"][e])
        for s in log["samples"]
        for e in range(len(s["epochs"]))
    ]


def test_the_plugin_module_imports_no_torch_and_inspect_robots_lists_it():
    code = "import sys, ivra.integrations.inspect_robots; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
    listed = subprocess.run(
        [str(BIN / "inspect-robots"), "list"], capture_output=True, text=True, timeout=120
    ).stdout
    sections = {}
    for line in listed.splitlines():
        if not line.startswith(" "):
            current = line.rstrip(":")
        else:
            sections.setdefault(current, []).append(line.strip("- ").strip())
    assert "ivra" in sections["policies"]
    assert "ivra-tabletop" in sections["embodiments"] and "ivra-tabletop" in sections["tasks"]


def test_cubepick_runs_a_2d_zero_and_sim_policy_with_arm_and_seed_in_each_trial(tmp_path):
    common = [
        "--task",
        "cubepick-reach",
        "-T",
        "num_scenes=2",
        "-T",
        "max_steps=5",
        "--embodiment",
        "cubepick",
    ]
    zero = _cli(
        tmp_path, *common, "--policy", "ivra", "-P", "policy=zero", "-P", "kwargs=action_dim=2,gripper=0",
        subprocess_run=True,
    )  # fmt: skip
    sim = _cli(
        tmp_path, *common, "--policy", "ivra", "-P", "policy=sim:fixed_ms=0,per_sample_ms=0,action_dim=2,chunk=3",
        "-P", "ivra=layer=1,lam=0.05", "--epochs", "2",
    )  # fmt: skip
    assert zero["eval"]["policy"] == "ivra:zero" and zero["status"] == "success"
    for sample, epoch, scores, meta in _trials(zero):
        assert (
            sample["status"] == "success" and scores["success_at_end"] == 0.0
        )  # a zero policy never reaches
        assert meta["ivra"]["arm"] == "baseline" and meta["ivra"]["setting"] is None
        init_seed = int(sample["scene_id"].split("-")[1])  # cubepick-reach: scene-i has init_seed i
        assert meta["ivra"]["episode_seed"] == derive_seed(0, init_seed, epoch)
        steps = [json.loads(x) for x in (tmp_path / "logs0" / meta["actions"]).read_text().splitlines()[1:]]
        assert len(steps) == 5 and all(s["action"] == [0.0, 0.0] for s in steps)
    seeds = set()
    for sample, epoch, _scores, meta in _trials(sim):
        assert meta["ivra"]["arm"] == "ivra" and meta["ivra"]["setting"]["lam"] == 0.05
        assert meta["ivra"]["chunks"] == 2  # 5 steps, 3 actions per chunk
        seeds.add(meta["ivra"]["episode_seed"])
        assert meta["ivra"]["episode_seed"] == derive_seed(0, int(sample["scene_id"].split("-")[1]), epoch)
    assert len(seeds) == 4  # two scenes x two epochs, each its own episode


def test_a_blind_arm_is_balanced_in_every_pair_and_a_wrong_seed_is_named(tmp_path):
    log = _cli(
        tmp_path, "--task", "cubepick-reach", "-T", "num_scenes=2", "-T", "max_steps=2", "--embodiment", "cubepick",
        "--epochs", "2", "--policy", "ivra", "-P", "policy=zero", "-P", "kwargs=action_dim=2,gripper=0",
        "-P", "ivra=layer=1,lam=0.2", "-P", "arm=blind", "-P", "blind_seed=5",
    )  # fmt: skip
    metas = [m["ivra"] for *_x, m in _trials(log)]
    assert [m["blind"]["trial"] for m in metas] == [0, 1, 2, 3]
    assert [m["arm"] for m in metas] == [arm_of(5, i) for i in range(4)]
    for pair in (metas[0:2], metas[2:4]):
        assert sorted(m["arm"] for m in pair) == ["baseline", "ivra"]
        # one scene run twice (epochs 0, 1): both arms draw the first trial's noise
        assert (
            pair[0]["episode_seed"]
            == pair[1]["episode_seed"]
            == pair[0]["trial_seed"]
            != pair[1]["trial_seed"]
        )
        assert all((m["setting"] is None) == (m["arm"] == "baseline") for m in pair)
    bad = _cli(
        tmp_path, "--task", "cubepick-reach", "-T", "num_scenes=1", "-T", "max_steps=2", "--embodiment", "cubepick",
        "--seed", "7", "--policy", "ivra", "-P", "policy=zero", "-P", "kwargs=action_dim=2", ok=False,
    )  # fmt: skip
    assert bad["samples"][0]["status"] == "error" and "pass -P seed=" in bad["samples"][0]["error"]


def test_bad_plugin_arguments_are_named():
    from ivra.integrations.inspect_robots import IvraPolicy

    with pytest.raises(ValueError, match="arm='sideways'"):
        IvraPolicy(policy="zero", arm="sideways")
    with pytest.raises(ValueError, match="needs the IVRA setting"):
        IvraPolicy(policy="zero", arm="blind")
    with pytest.raises(ValueError, match="lam"):
        IvraPolicy(policy="zero", ivra="layer=1,lam=7")


def test_a_non_finite_action_is_an_error_naming_the_policy():
    from inspect_robots.embodiment import EmbodimentInfo
    from inspect_robots.scene import Scene
    from inspect_robots.spaces import Box, CameraSpec, ObservationSpace
    from inspect_robots.types import Observation

    from ivra.integrations.inspect_robots import IvraPolicy

    pol = IvraPolicy(policy="zero", kwargs="action_dim=2,gripper=NaN")
    pol.bind(EmbodimentInfo("x", Box((2,)), ObservationSpace(cameras=(CameraSpec("top", 4, 4),))))
    pol.reset(Scene(id="s", instruction="go", init_seed=0))
    with pytest.raises(ValueError, match="'zero' answered a non-finite action"):
        pol.act(Observation(images={"top": np.zeros((4, 4, 3), np.uint8)}))


@pytest.mark.slow
def test_a_tabletop_ab_of_the_shipped_policy_through_the_cli_equals_ivra_in_process(tmp_path):
    """Both arms through ``inspect-robots run`` (its CLI entry, in this process so the model loads once), each
    trial the episode ivra's own rollout gives for that (split, seed) and arm: success and every action."""
    from ivra.minivla.policy import MiniVLAPolicy
    from ivra.tabletop.rollout import rollout

    split, setting = "novel_object", {"layer": 0, "lam": 0.1}
    logs, dirs = {}, {}
    for arm, extra in (("baseline", []), ("ivra", ["-P", "ivra=layer=0,lam=0.1"])):
        dirs[arm] = tmp_path / f"logs{len(logs)}"
        logs[arm] = _cli(
            tmp_path, "--task", "ivra-tabletop", "-T", f"split={split}", "-T", "n=3", "--embodiment", "ivra-tabletop",
            "--policy", "ivra", "-P", "policy=low", *extra,
        )  # fmt: skip
    policy = MiniVLAPolicy("low")
    for arm, cfg in (("baseline", None), ("ivra", setting)):
        ref = {ep["seed"]: ep for ep in rollout(policy, split, [0, 1, 2], ivra=cfg)}
        for sample, _e, scores, meta in _trials(logs[arm]):
            seed = int(sample["scene_id"].rsplit("-", 1)[1])
            assert meta["ivra"]["arm"] == arm
            assert scores["success_at_end"] == float(ref[seed]["success"])
            lines = (dirs[arm] / meta["actions"]).read_text().splitlines()[1:]
            actions = [json.loads(x)["action"] for x in lines]
            np.testing.assert_allclose(actions, ref[seed]["actions"], atol=6e-5)  # ivra rounds to 4 places
