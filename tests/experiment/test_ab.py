"""Paired tabletop A/B: lockstep rollouts, malformed actions, summaries, and the demo/sweep/viz verbs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ivra.experiment.ab import format_table, make_units, summarize
from ivra.tabletop.env import TabletopEnv
from ivra.tabletop.rollout import rollout


class MirrorExpert:
    """Knows the scenes because it replays the same (split, seeds) in envs of its own, in lockstep."""

    name = "mirror-expert"

    def __init__(self, split, seeds, spoil=()):
        self.envs = [TabletopEnv(split=split) for _ in seeds]
        for env, seed in zip(self.envs, seeds):
            env.reset(seed=seed)
        self.active = list(range(len(seeds)))
        self.spoil = set(spoil)  # indices whose first action is malformed

    def reset(self, seed=None):
        pass

    def act(self, observations, instructions):
        out = []
        for i in self.active:
            out.append(np.full(4, np.nan, np.float32) if i in self.spoil else self.envs[i].expert_action())
        still = []
        for a, i in zip(out, self.active):
            if i in self.spoil:
                continue
            _, _, term, trunc, _ = self.envs[i].step(a)
            if not (term or trunc):
                still.append(i)
        self.active = still
        return np.stack(out)


def test_rollout_lockstep_expert_solves_everything_and_malformed_fails():
    seeds = list(range(12))
    res = rollout(MirrorExpert("combination", seeds, spoil={3}), "combination", seeds)
    assert [r["seed"] for r in res] == seeds
    assert all(r["success"] for i, r in enumerate(res) if i != 3)
    assert res[3]["malformed"] and not res[3]["success"] and res[3]["steps"] == 0


def _record(arm, split, seeds, successes):
    return {
        "key": f"{split}/{arm}",
        "status": "ok",
        "unit": {"arm": arm},
        "result": {
            "episodes": [
                {"split": split, "seed": s, "success": ok, "malformed": False}
                for s, ok in zip(seeds, successes)
            ]
        },
    }


def test_summary_pairs_episodes_and_counts_errors_separately():
    seeds = list(range(10))
    base = [True] * 5 + [False] * 5
    treat = [True] * 4 + [False] + [True] * 3 + [False] * 2  # 1 lost, 3 gained
    records = [
        _record("baseline", "val", seeds, base),
        _record("ivra", "val", seeds, treat),
        {"key": "val/ivra/x", "status": "error", "unit": {"arm": "ivra"}},
    ]
    s = summarize(records, ["val"])
    row = s["rows"][0]
    assert row["n"] == 10 and row["baseline"] == 0.5 and row["ivra"] == 0.7
    assert row["ivra_only"] == 3 and row["baseline_only"] == 1
    assert row["p_mcnemar"] == pytest.approx(0.625)  # exact binomial, 4 discordant pairs, 1 vs 3
    assert s["errors"] == ["val/ivra/x"]
    assert "not counted" in format_table(s)


def test_units_are_paired_and_unique():
    units = make_units(
        ["val", "placement"], 120, {"baseline": None, "ivra": {"layer": 1, "lam": 0.3}}, chunk=50
    )
    keys = [u["key"] for u in units]
    assert len(set(keys)) == len(keys) == 2 * 3 * 2
    by_arm = {}
    for u in units:
        by_arm.setdefault(u["arm"], []).append((u["split"], tuple(u["seeds"])))
    assert by_arm["baseline"] == by_arm["ivra"]


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory):
    """A real (very small, briefly trained) policy run directory, standing in for the shipped one."""
    from ivra.minivla.model import MiniVLASpec
    from ivra.minivla.train import pretrain_vision, train_policy

    SMALL = MiniVLASpec.small()

    root = tmp_path_factory.mktemp("policy")
    vision = pretrain_vision(root / "vision", steps=1, batch=4, n_pairs=8, spec=SMALL)
    return train_policy(root / "policy", vision, episodes=4, steps=1, batch=4, spec=SMALL)


def test_demo_verb_end_to_end_and_resume(tiny_policy_dir, tmp_path):
    from ivra.cli import main

    args = [
        "demo",
        "--policy",
        str(tiny_policy_dir),
        "--episodes",
        "6",
        "--chunk",
        "3",
        "--splits",
        "placement,novel_task",
        "--ivra",
        "layer=1,lam=0.3",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    rows = {r["split"]: r for r in result["summary"]["rows"]}
    assert rows["placement"]["n"] == 6 and rows["all"]["n"] == 12
    assert (tmp_path / "affinity.png").stat().st_size > 1000
    journal = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert len(journal) == 8  # 2 splits x 2 chunks x 2 arms
    assert main(args) == 0  # rerun: everything already journaled, nothing run twice
    assert (tmp_path / "journal.jsonl").read_text().splitlines() == journal


def test_sweep_verb_writes_heatmap_and_table(tiny_policy_dir, tmp_path):
    from ivra.cli import main

    assert (
        main(
            [
                "sweep",
                "--policy",
                str(tiny_policy_dir),
                "--episodes",
                "3",
                "--chunk",
                "3",
                "--layers",
                "0,1",
                "--lams",
                "0.2,0.5",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "results.json").read_text())
    assert len(res["rows"]) == 4 and (tmp_path / "sweep.png").exists()
    assert res["best"]["layer"] in (0, 1)


def test_unknown_split_is_a_clear_error(tiny_policy_dir, tmp_path):
    from ivra.cli import main

    with pytest.raises(SystemExit, match="unknown split"):
        main(["demo", "--policy", str(tiny_policy_dir), "--splits", "nope", "--out", str(tmp_path)])
