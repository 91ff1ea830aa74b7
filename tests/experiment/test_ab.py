"""Paired tabletop A/B: lockstep rollouts, malformed actions, summaries, and the demo/sweep/viz verbs (their
results, their exit statuses, and the mistakes caught before any episode runs)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ivra.experiment.ab import families, format_table, make_units, summarize
from ivra.policies.base import SingleStep
from ivra.tabletop.env import TabletopEnv
from ivra.tabletop.rollout import rollout


class MirrorExpert(SingleStep):
    """Knows the scenes because it replays the same (split, seeds) in envs of its own, in lockstep."""

    name = "mirror-expert"

    def __init__(self, split, seeds, spoil=()):
        self.envs = [TabletopEnv(split=split) for _ in seeds]
        for env, seed in zip(self.envs, seeds):
            env.reset(seed=seed)
        self.active = list(range(len(seeds)))
        self.spoil = set(spoil)  # indices whose first action is malformed

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
    assert res[3]["error"] == "non-finite action at step 0: the policy answered NaN or inf"
    assert all("error" not in r for i, r in enumerate(res) if i != 3)


def test_a_nonfinite_action_is_named_in_the_episode_and_counted_in_the_table():
    seeds = list(range(6))
    expert = MirrorExpert("combination", seeds, spoil={1, 4})
    expert.nonfinite_means = "its action tokens could not be decoded"
    treat = rollout(expert, "combination", seeds)
    assert treat[1]["error"] == "non-finite action at step 0: its action tokens could not be decoded"
    base = rollout(MirrorExpert("combination", seeds, spoil={2}), "combination", seeds)
    records = [
        {"key": f"combination/{arm}", "status": "ok", "unit": {"arm": arm}, "result": {"episodes": eps}}
        for arm, eps in (("baseline", base), ("ivra", treat))
    ]
    s = summarize(records, ["combination"])
    assert (s["rows"][-1]["malformed_baseline"], s["rows"][-1]["malformed_ivra"]) == (1, 2)
    assert "non-finite action (never executed; counted as failures): baseline 1, IVRA 2" in format_table(s)
    clean = summarize([{**r, "result": {"episodes": base[:2]}} for r in records], ["combination"])
    assert "non-finite" not in format_table(clean)


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


def test_unknown_split_is_a_clear_error(tiny_policy_dir, tmp_path, capsys):
    from ivra.cli import main

    with pytest.raises(SystemExit) as info:
        main(["demo", "--policy", str(tiny_policy_dir), "--splits", "nope", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "unknown split 'nope'; expected one of: train, val" in capsys.readouterr().err
    assert not (tmp_path / "journal.jsonl").exists()


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_setting_or_policy_is_caught_before_any_episode(tiny_policy_dir, tmp_path, capsys):
    """The issue's `--ivra layer=99` used to run, error in every IVRA unit, print an empty table and exit 0."""
    from ivra.cli import main

    pol = str(tiny_policy_dir)
    assert main(["demo", "--policy", pol, "--ivra", "layer=99,lam=0.3", "--out", str(tmp_path / "a")]) == 2
    line = _one_line(capsys)
    assert line.startswith(
        "ivra demo: error: IVRA setting layer=99, lam=0.3 (arm ivra): layer 99 is out of range"
    )
    assert not (tmp_path / "a").exists()  # nothing ran, nothing written
    assert main(["demo", "--policy", "nosuch", "--out", str(tmp_path / "b")]) == 2
    assert "--policy nosuch: unknown policy 'nosuch'" in _one_line(capsys)
    sweep = ["sweep", "--policy", pol, "--episodes", "2", "--layers", "0,1", "--out", str(tmp_path / "c")]
    assert main([*sweep, "--affinity-layers", "-1,7"]) == 2
    assert "affinity_layer 7 is out of range" in _one_line(capsys)
    assert main([*sweep, "--split", "novel_task", "--write-default"]) == 2
    assert "must be tuned on --split val, not 'novel_task'" in _one_line(capsys)
    viz = [
        "viz",
        "--policy",
        pol,
        "--ivra",
        "layer=0,lam=0.1",
    ]  # not the shipped default: sized for the real policy
    assert main([*viz, "--queries", "0,16", "--out", str(tmp_path / "v.png")]) == 2
    assert "patch index 16 out of range; this policy has 16 patches, expected 0..15" in _one_line(capsys)
    assert not (tmp_path / "c").exists() and not (tmp_path / "v.png").exists()


def test_errored_arm_exits_1_with_a_summary_and_rerun_errors_retries_it(
    tiny_policy_dir, tmp_path, capsys, monkeypatch
):
    """An arm whose units all fail at run time (here: IVRA-arm episodes raise) is reported per arm, exit 1; a
    plain resume keeps the errors, --rerun-errors runs them again."""
    import ivra.tabletop.rollout as rollout_module
    from ivra.cli import main

    real = rollout_module.rollout

    def ivra_arm_breaks(policy, *a, **kw):
        if policy.ivra_handle is not None:
            raise RuntimeError("simulated failure of the IVRA arm")
        return real(policy, *a, **kw)

    args = ["demo", "--policy", str(tiny_policy_dir), "--episodes", "4", "--chunk", "2", "--splits", "val"]
    args += ["--ivra", "layer=1,lam=0.3", "--out", str(tmp_path)]
    monkeypatch.setattr(rollout_module, "rollout", ivra_arm_breaks)
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "error: 2 work unit(s) ended in an error" in captured.err
    assert "arm ivra: 2 of 2 unit(s) failed; first (" in captured.err
    assert (
        "RuntimeError: simulated failure of the IVRA arm" in captured.err and "--rerun-errors" in captured.err
    )
    assert "Traceback" not in captured.err + captured.out
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["errors"][0]["arm"] == "ivra" and result["errors"][0]["errors"] == 2
    assert result["summary"]["rows"] == []
    monkeypatch.setattr(rollout_module, "rollout", real)
    assert main(args) == 1  # a plain resume does not rerun final errors
    capsys.readouterr()
    assert main([*args, "--rerun-errors"]) == 0
    captured = capsys.readouterr()
    assert "ended in an error" not in captured.err
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["errors"] == [] and result["summary"]["rows"][-1]["n"] == 4


def test_corrupt_journal_is_one_line_naming_the_line_and_the_fix(tiny_policy_dir, tmp_path, capsys):
    from ivra.cli import main

    args = ["demo", "--policy", str(tiny_policy_dir), "--episodes", "2", "--chunk", "1", "--splits", "val"]
    args += ["--ivra", "layer=1,lam=0.3", "--out", str(tmp_path)]
    assert main(args) == 0
    journal = tmp_path / "journal.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join([lines[0], lines[1][:40], *lines[2:]]) + "\n")
    capsys.readouterr()
    assert main(args) == 1
    line = _one_line(capsys)
    assert f"{journal}, line 2: corrupt journal line" in line and f"sed -i '2d' {journal}" in line
    journal.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # the recovery the message names
    assert main(args) == 0
    assert len(journal.read_text().splitlines()) == len(lines)


def test_per_family_summary_pairs_episodes_within_each_family():
    def rec(arm, eps):
        return {"key": arm, "status": "ok", "unit": {"arm": arm}, "result": {"episodes": eps}}

    def ep(seed, task, ok):
        return {"split": "val", "seed": seed, "task": task, "success": ok, "malformed": False}

    base = [ep(0, "spatial", False), ep(1, "spatial", True), ep(2, "pick_place", True)]
    treat = [ep(0, "spatial", True), ep(1, "spatial", True), ep(2, "pick_place", False)]
    records = [rec("baseline", base), rec("ivra", treat)]
    assert families(records) == ["pick_place", "spatial"]  # TASKS order
    s = summarize(records, families(records), by="task")
    rows = {r["task"]: r for r in s["rows"]}
    assert rows["spatial"]["n"] == 2 and rows["spatial"]["baseline"] == 0.5 and rows["spatial"]["ivra"] == 1.0
    assert rows["pick_place"]["diff"] == -1.0 and rows["all"]["n"] == 3
    assert format_table(s).startswith("| task family | n |")


def test_sweep_affinity_axes_give_one_cell_per_combination(tiny_policy_dir, tmp_path, capsys):
    from ivra.cli import main

    argv = ["sweep", "--policy", str(tiny_policy_dir), "--episodes", "2", "--chunk", "2", "--layers", "1"]
    argv += [
        "--lams",
        "0.3",
        "--features",
        "key,hidden",
        "--affinity-layers",
        "-1,-2",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    cells = {(r["affinity_feature"], r["affinity_mode"], r["affinity_layer"]) for r in res["rows"]}
    assert cells == {(f, "cosine", a) for f in ("key", "hidden") for a in (-1, -2)}
    assert all(r["n"] == 2 for r in res["rows"])
    pngs = sorted(p.name for p in tmp_path.glob("sweep_*.png"))
    assert pngs == [
        "sweep_hidden_cosine_aff-1.png",
        "sweep_hidden_cosine_aff-2.png",
        "sweep_key_cosine_aff-1.png",
        "sweep_key_cosine_aff-2.png",
    ]
    out = capsys.readouterr().out
    assert "| layer | lam | feature | mode | affinity layer |" in out
    if res["winner"]:  # a cell above the baseline is named; otherwise the sweep says there is none
        assert "winner on val: layer=1, lam=0.3" in out and res["winner"]["success"] > res["baseline"]
    else:
        assert "no winner on val: no cell is above the baseline" in out
        assert all(r["success"] <= res["baseline"] for r in res["rows"])


def test_bare_sweep_grid_is_every_layer_of_the_policy(tiny_policy_dir, tmp_path):
    """The default --layers used to be 0..5 whatever the policy, so a bare `ivra sweep` failed on the shipped
    4-layer policy."""
    from ivra.adapters import detect
    from ivra.cli import main
    from ivra.minivla.policy import MiniVLAPolicy

    model = MiniVLAPolicy(str(tiny_policy_dir)).model
    n_layers = len(detect(model).lm_layers(model))
    argv = ["sweep", "--policy", str(tiny_policy_dir), "--episodes", "1", "--chunk", "1", "--lams", "0.5"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["layer"] for r in res["rows"]) == list(range(n_layers))


def test_sweep_names_no_winner_and_records_nothing_when_no_cell_beats_the_baseline(
    tiny_policy_dir, tmp_path, capsys, monkeypatch
):
    """lam=0 is bit-identical to the baseline, so no cell can be above it: no winner, no recorded default."""
    from ivra.cli import main
    from ivra.experiment.ab import default_setting

    setting = tmp_path / "setting.json"
    monkeypatch.setenv("IVRA_SETTING_FILE", str(setting))
    argv = ["sweep", "--policy", str(tiny_policy_dir), "--episodes", "2", "--chunk", "2", "--layers", "0,1"]
    assert main([*argv, "--lams", "0", "--write-default", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert "no winner on val: no cell is above the baseline" in captured.out
    assert "not recording a default: no cell is above the baseline" in captured.err
    assert json.loads((tmp_path / "run" / "results.json").read_text())["winner"] is None
    assert not setting.exists()
    assert default_setting()[1] == "paper default (no sweep recorded)"  # the override is where demo reads


def test_write_default_goes_to_the_setting_file_override(tiny_policy_dir, tmp_path, monkeypatch):
    """$IVRA_SETTING_FILE redirects what --write-default writes and what `ivra demo` reads (the shipped file,
    inside the installed package, is left alone)."""
    from ivra.experiment import ab

    shipped = ab.SHIPPED_SETTING_FILE.read_bytes()
    setting = tmp_path / "setting.json"
    setting.write_text(json.dumps({"ivra": {"layer": 1, "lam": 0.2}, "source": "a test"}))
    monkeypatch.setenv("IVRA_SETTING_FILE", str(setting))
    assert ab.default_setting() == ({"layer": 1, "lam": 0.2}, "a test")
    assert ab.SHIPPED_SETTING_FILE.read_bytes() == shipped


@pytest.mark.parametrize("design", ["group", "anytime"])
def test_sequential_demo_stops_by_the_rule_and_a_rerun_reaches_the_same_decision(
    tiny_policy_dir, tmp_path, capsys, design
):
    """`ivra demo --sequential --design D`: rounds of the same units a fixed run has; the design, the decision, the
    pairs it was reached at and the episodes spent are recorded; a rerun replays the journal (nothing runs twice) to
    the same decision. The decision is the last thing printed and ends table.md, with both intervals labelled."""
    from ivra.cli import main

    argv = ["demo", "--policy", str(tiny_policy_dir), "--splits", "placement,combination", "--chunk", "2"]
    argv += ["--sequential", "--episodes", "6", "--round", "2", "--delta", "0.5", "--out", str(tmp_path)]
    argv += ["--design", design]
    assert main(argv) == 0
    first = json.loads((tmp_path / "results.json").read_text())["sequential"]
    journal = (tmp_path / "journal.jsonl").read_text().splitlines()
    d = first["decision"]
    assert first["design"] == design
    if design == "group":
        assert first["planned_rounds"] == 3 and len(first["looks"]) == first["rounds"]
        assert [lk["n"] for lk in first["looks"]] == [4 * (r + 1) for r in range(first["rounds"])]
    assert d["outcome"] in ("effect", "futility", "inconclusive") and d["n"] == first["episodes_spent"] // 2
    assert first["fixed_design_episodes"] == 2 * 6 * 2 and first["episodes_spent"] <= 2 * 6 * 2
    assert len(journal) == first["rounds"] * 2 * 2  # per round: 2 splits x 2 arms, one 2-episode unit each
    if d["outcome"] != "inconclusive":
        assert first["episodes_spent"] < first["fixed_design_episodes"] or first["rounds"] == 3
    out = capsys.readouterr().out.strip()
    last = out.splitlines()[-1]
    assert last.startswith(
        f"sequential A/B ({design} design): **{d['outcome']}** after {first['rounds']} round(s)"
    )
    assert "anytime-valid 95 % interval" in last and "fixed-design 95 % interval" in last
    assert "power (`ivra plan`):" in out
    table = (tmp_path / "table.md").read_text().strip()
    assert table.splitlines()[-1] == last and "fixed-design intervals" in table
    assert main(argv) == 0
    assert json.loads((tmp_path / "results.json").read_text())["sequential"] == first
    assert (tmp_path / "journal.jsonl").read_text().splitlines() == journal
    other = (
        "anytime" if design == "group" else "group"
    )  # the journaled rounds judged by another rule: refused
    capsys.readouterr()
    assert main([*argv[:-1], other]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f'--design: "{design}" -> "{other}"' in err[0]  # the shared run-folder check


@pytest.mark.parametrize("verb", [["demo", "--sequential"], ["sweep", "--adaptive"]], ids=["demo", "sweep"])
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--design", "bogus"], "unknown design 'bogus'; expected one of: group, anytime"),
        (
            ["--design", "group", "--episodes", "4", "--round", "4"],
            "--design group: --episodes 4 with --round 4",
        ),
    ],
)
def test_sequential_bad_design_is_one_line_exit_2(tmp_path, capsys, verb, extra, message):
    from ivra.cli import main

    try:
        code = main([*verb, "--out", str(tmp_path), *extra])
    except SystemExit as exc:  # a parser error
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not (tmp_path / "journal.jsonl").exists()


@pytest.mark.parametrize("design", ["group", "anytime"])
def test_adaptive_sweep_spends_at_most_the_grid_budget_and_names_only_survivors(
    tiny_policy_dir, tmp_path, capsys, design
):
    """`ivra sweep --adaptive --design D`: rounds for the baseline and the surviving cells; every cell's
    anytime-valid interval (Bonferroni over cells) is recorded (and, for the group design, every look); cells out
    are never the winner; at most the grid's budget; a rerun resumes to the same result without running anything."""
    from ivra.cli import main

    argv = ["sweep", "--policy", str(tiny_policy_dir), "--episodes", "4", "--chunk", "2", "--round", "2"]
    argv += ["--layers", "0,1", "--lams", "0,1", "--adaptive", "--out", str(tmp_path), "--design", design]
    assert main(argv) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    ad = res["adaptive"]
    assert ad["design"] == design if design == "group" else ad.get("design", "anytime") == "anytime"
    if design == "group":
        assert ad["planned_rounds"] == 2 and set(ad["looks"]) == set(ad["intervals"])
    journal = (tmp_path / "journal.jsonl").read_text()
    assert ad["cell_episodes_spent"] <= ad["grid_cell_episodes"] == 4 * 4
    assert set(ad["intervals"]) == {r["arm"] for r in res["rows"]} and len(res["rows"]) == 4
    assert all(ad["eliminated_in_round"].get(s) is None for s in ad["survivors"])
    if res["winner"]:
        assert res["winner"]["arm"] in ad["survivors"]
    out = capsys.readouterr().out
    assert f"adaptive ({design} design):" in out and "| out in round |" in out
    assert main(argv) == 0
    assert json.loads((tmp_path / "results.json").read_text())["adaptive"] == ad
    assert (tmp_path / "journal.jsonl").read_text() == journal
    other = "anytime" if design == "group" else "group"
    capsys.readouterr()
    assert main([*argv[:-1], other]) == 2
    assert f'--design: "{design}" -> "{other}"' in capsys.readouterr().err  # the shared run-folder check


def _known_outcomes(outcome: dict, ran: dict):
    """An ``_execute`` stand-in whose episodes succeed by ``outcome[arm](seed)``, counting episodes per arm in ``ran``."""

    def fake_execute(args, units, journal, desc, pol=None):
        recs = []
        for u in units:
            ran[u["arm"]] = ran.get(u["arm"], 0) + len(u["seeds"])
            eps = [{"split": u["split"], "seed": s, "success": outcome[u["arm"]](s), "task": "t", "malformed": False}
                   for s in u["seeds"]]  # fmt: skip
            recs.append({"key": u["key"], "status": "ok", "unit": u, "result": {"episodes": eps}})
        return recs, None

    return fake_execute


def test_group_sweep_stops_worse_and_futile_cells_at_the_planned_looks(monkeypatch):
    """With episodes of known outcome (baseline succeeds on even seeds; 'good' always, 'bad' never, 'coin' on odd
    seeds: as often as the baseline, every pair discordant), the group design stops 'bad' as worse, 'good' as a gain
    (kept), 'coin' for futility (no gain as large as delta), each at a planned look, and spends less than the grid."""
    from types import SimpleNamespace

    from ivra.experiment import cli as ecli

    outcome = {
        "baseline": lambda s: s % 2 == 0,
        "good": lambda s: True,
        "bad": lambda s: False,
        "coin": lambda s: s % 2 == 1,
    }
    ran: dict[str, int] = {}
    monkeypatch.setattr(ecli, "_execute", _known_outcomes(outcome, ran))
    args = SimpleNamespace(episodes=400, round=50, split="val", chunk=50, policy="p", delta=0.2)
    cells = [("good", {}), ("bad", {}), ("coin", {})]
    _, info = ecli._group_rounds(args, cells, None, None)
    assert info["decisions"] == {"good": "better", "bad": "worse", "coin": "futility"}, info["decisions"]
    assert set(info["eliminated_in_round"]) == {"bad", "coin"} and info["survivors"] == ["good"]
    for name in ("good", "bad", "coin"):
        looks = info["looks"][name]
        assert ran[name] == 50 * len(looks) and looks[-1]["outcome"] == info["decisions"][name]
    assert ran["coin"] < 400 and info["cell_episodes_spent"] < 3 * 400


def test_adaptive_elimination_stops_clearly_worse_cells_and_then_the_sweep(monkeypatch):
    """With episodes of known outcome (cell 'bad' always fails, the baseline and 'good' always succeed, 'mid'
    succeeds on even seeds), 'bad' is eliminated once its interval lies below another cell's, runs no further
    episode, and the sweep ends when one cell is left, far under the grid's budget."""
    from types import SimpleNamespace

    from ivra.experiment import cli as ecli

    outcome = {
        "baseline": lambda s: True,
        "good": lambda s: True,
        "bad": lambda s: False,
        "mid": lambda s: s % 2 == 0,
    }
    ran: dict[str, int] = {}
    monkeypatch.setattr(ecli, "_execute", _known_outcomes(outcome, ran))
    args = SimpleNamespace(episodes=400, round=50, split="val", chunk=50, policy="p")
    cells = [("good", {}), ("bad", {}), ("mid", {})]
    _, info = ecli._adaptive_rounds(args, cells, None, None)
    assert "bad" in info["eliminated_in_round"] and "bad" not in info["survivors"]
    assert info["cell_episodes_spent"] <= info["grid_cell_episodes"] == 3 * 400
    first_out = info["eliminated_in_round"]["bad"]
    assert ran["bad"] == 50 * first_out  # it stopped at the round it was eliminated in
    assert info["survivors"] == ["good"] and info["cell_episodes_spent"] < 3 * 400
    lo, hi = info["intervals"]["bad"]
    assert hi < info["intervals"]["good"][0]


def test_a_unit_rolls_its_seeds_in_lockstep_as_one_at_a_time():
    """A demo unit steps its seeds together (one batched policy call per step, episodes leaving as they end); each
    episode -- outcome, steps, every action -- is the one its seed gives alone, in both arms (shipped policy)."""
    from ivra.experiment.ab import TabletopABJob, default_setting

    job = TabletopABJob(policy="low", threads=1)
    job.setup()
    seeds = list(range(20))
    episodes = {}
    for arm, cfg in (("baseline", None), ("ivra", default_setting()[0])):
        unit = {"key": f"val/{arm}", "split": "val", "seeds": seeds, "arm": arm, "ivra": cfg}
        together = job.run(unit)["episodes"]
        alone = [job.run({**unit, "seeds": [s]})["episodes"][0] for s in seeds]
        assert together == alone, arm
        episodes[arm] = together
    steps = {ep["steps"] for ep in episodes["baseline"]}
    assert len(steps) > 1  # episodes of different lengths: some left the batch early
    assert any(ep["success"] for ep in episodes["baseline"]) and not all(
        ep["success"] for ep in episodes["baseline"]
    )
    assert [ep["actions"] for ep in episodes["baseline"]] != [ep["actions"] for ep in episodes["ivra"]]
