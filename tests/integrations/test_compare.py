"""``ivra compare RUN_A RUN_B`` on runs of each tool it reads: inspect-robots EvalLogs written by the real
inspect-robots 0.60.0, vla-eval aggregate JSONs written by vla-eval 0.8.0's own export code, ivra journals written
by ivra's journal, lerobot-eval's eval_info.json as lerobot 0.6.1 writes it (recorded facts); the refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ivra.cli import main as ivra_main
from ivra.eval.journal import Journal
from ivra.eval.stats import paired_ab

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "compare"


def _compare(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what ran before (an inspect-robots run prints its summary)
    rc = ivra_main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def _numbers(capsys, *args: str) -> dict:
    rc, out, _err = _compare(capsys, *args, "--json")
    assert rc == 0
    return json.loads(out)


# --- inspect-robots ---------------------------------------------------------------------------------------


def _inspect_robots(tmp_path: Path, name: str, *args: str) -> Path:
    pytest.importorskip("inspect_robots")
    from inspect_robots.cli import main

    log_dir = tmp_path / name
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        mp.setenv("INSPECT_ROBOTS_CONFIG", str(tmp_path / "absent.ini"))
        assert main(["run", "--no-prompt", "--log-dir", str(log_dir), *args]) == 0
    (log,) = log_dir.glob("*.json")
    return log


def test_two_inspect_robots_runs_pair_trial_by_trial(tmp_path, capsys):
    task = [
        "--task",
        "cubepick-reach",
        "-T",
        "num_scenes=3",
        "-T",
        "max_steps=20",
        "--embodiment",
        "cubepick",
    ]
    noop = _inspect_robots(tmp_path, "noop", *task, "--policy", "noop")
    scripted = _inspect_robots(tmp_path, "scripted", *task, "--policy", "scripted", "--epochs", "2")
    res = _numbers(capsys, noop, scripted)
    # 3 scenes x 1 epoch shared (the scripted run's second epochs have no partner)
    assert res["a"]["arm"] == "noop" and res["b"]["arm"] == "scripted"
    assert res["paired"]["n"] == 3 and res["only_b"] == 3 and res["identity"] == "task, seed, scene id, epoch"
    assert res["paired"]["b_only"] == 3 and res["paired"]["k_a"] == 0  # the oracle reaches, noop never does
    assert res["paired"] == {
        **paired_ab([False] * 3, [True] * 3).as_dict(),
        "diff_ci": res["paired"]["diff_ci"],
    }
    assert res["paired"]["p_mcnemar"] == pytest.approx(0.25)
    rc, out, _ = _compare(capsys, noop, scripted)
    assert rc == 0 and "| A failure | 3 | 0 |" in out and "McNemar exact test: p = 0.25" in out
    assert "sequential (anytime-valid" in out and "power:" in out
    # another run seed: other trial seeds, other cube placements: nothing to pair
    other = _inspect_robots(tmp_path, "seed1", *task, "--policy", "scripted", "--seed", "1")
    rc, out, err = _compare(capsys, noop, other)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "the runs share no episode" in err


def test_a_blind_inspect_robots_log_gives_its_arms_by_name(tmp_path, capsys):
    log = _inspect_robots(
        tmp_path, "blind", "--task", "cubepick-reach", "-T", "num_scenes=2", "-T", "max_steps=2",
        "--embodiment", "cubepick", "--epochs", "2", "--policy", "ivra", "-P", "policy=zero",
        "-P", "kwargs=action_dim=2,gripper=0", "-P", "ivra=layer=1,lam=0.2", "-P", "arm=blind",
    )  # fmt: skip
    # the two trials of blind pair k (scene k, epochs 0 and 1) are paired, one of each arm
    rc, out, err = _compare(capsys, log, log)
    assert rc == 0 and "paired on 2 shared episodes (identity: task, seed, scene id, blind pair)" in out
    assert "(inspect-robots, arm baseline)" in out and "(inspect-robots, arm ivra)" in out
    assert "warning:" in err and "a blind run" in err
    # one epoch per scene: a pair spans two scenes, nothing to pair
    other = _inspect_robots(
        tmp_path, "blind1", "--task", "cubepick-reach", "-T", "num_scenes=2", "-T", "max_steps=2",
        "--embodiment", "cubepick", "--policy", "ivra", "-P", "policy=zero",
        "-P", "kwargs=action_dim=2,gripper=0", "-P", "ivra=layer=1,lam=0.2", "-P", "arm=blind", "-P", "blind_seed=1",
    )  # fmt: skip
    rc, _out, err = _compare(capsys, other, other)
    assert rc == 2 and "share no episode" in err
    rc, _out, err = _compare(capsys, log, log, "--arm-b", "sideways")
    assert rc == 2 and "no arm 'sideways'" in err and ("baseline, ivra" in err or "ivra, baseline" in err)


# --- vla-eval ---------------------------------------------------------------------------------------------


def export_vla_eval(
    out_dir: Path, successes: dict[tuple[str, int], bool], seed: int = 7, server_info: dict | None = None
) -> Path:
    """An aggregate JSON written by vla-eval 0.8.0's own code: its RecordingStore filled as its orchestrator fills
    it (``orchestrator.py``: metadata, one episode result per work item with the task's scalar fields and
    ``task_idx`` as context), then ``vla_eval.results.export.export_db``."""
    from vla_eval.recording import RecordingStore, db_path_for_eval, serializable_task_kwargs
    from vla_eval.results.export import export_db

    eval_id = "ab"
    store = RecordingStore(db_path_for_eval(out_dir, eval_id))
    bench_id = f"{eval_id}-libero_spatial"
    store.upsert_eval_metadata(
        bench_id,
        "libero_spatial",
        {
            "benchmark": "libero_spatial",
            "mode": "sync",
            "config": {"params": {"seed": seed}, "episodes_per_task": 2},
            "metric_keys": {"success": "mean"},
            "harness_version": "0.8.0",
        }
        | ({} if server_info is None else {"server_info": server_info}),
    )
    tasks = sorted({t for t, _ in successes})
    for (task, ep), ok in sorted(successes.items()):
        task_idx = tasks.index(task)
        kwargs = {"name": task, "suite": "libero_spatial", "task_id": task_idx, "episode_idx": ep}
        store.upsert_episode_result(
            sid=f"s{task_idx}", eid=f"e{ep}", eval_id=bench_id, task_name=task, episode_id=ep,
            status="success" if ok else "fail", metrics={"success": ok}, steps=10, elapsed_sec=1.0,
            context={**serializable_task_kwargs(kwargs), "task_idx": task_idx}, jsonl_path="",
            failure_reason=None, failure_detail=None,
        )  # fmt: skip
    store.close()
    export_db(db_path_for_eval(out_dir, eval_id), out_dir)
    return out_dir / "libero_spatial_aggregate.json"


OUTCOMES_A = {("pick the bowl", 0): True, ("pick the bowl", 1): False, ("open the drawer", 0): False}
OUTCOMES_B = {("pick the bowl", 0): True, ("pick the bowl", 1): True, ("open the drawer", 0): True}


def test_two_vla_eval_runs_built_by_its_export_code_pair_with_a_work_order_warning(tmp_path, capsys):
    pytest.importorskip("vla_eval")
    a = export_vla_eval(tmp_path / "a", OUTCOMES_A)
    b = export_vla_eval(tmp_path / "b", OUTCOMES_B)
    for produced, recorded in (
        (a, "vla_eval_a.json"),
        (b, "vla_eval_b.json"),
    ):  # the committed files are these
        strip = lambda d: {k: v for k, v in d.items() if k != "created_at"}  # noqa: E731
        assert strip(json.loads(produced.read_text())) == strip(json.loads((FIXTURES / recorded).read_text()))
    rc, out, err = _compare(capsys, a, b)
    assert rc == 0 and "paired on 3 shared episodes" in out and "| A failure | 2 | 0 |" in out
    assert "warning:" in err and "cannot guarantee that paired episodes were identical" in err
    c = export_vla_eval(tmp_path / "c", OUTCOMES_B, seed=8)  # another seed: other episodes
    rc, _out, err = _compare(capsys, a, c)
    assert rc == 2 and "share no episode" in err


def _served_hello(default_ivra: dict | None) -> dict:
    """The server_info vla-eval 0.8.0's own Connection takes from ``ivra serve``'s hello (its orchestrator stores
    it in the run's metadata, so the aggregate carries it)."""
    import anyio
    from vla_eval.connection import Connection

    from ivra.serve.policies import load_policy
    from ivra.serve.server import PolicyServer, ServeOptions, ServerThread

    policy, spec = load_policy("sim:fixed_ms=0,per_sample_ms=0")
    with ServerThread(PolicyServer(policy, ServeOptions(port=0, default_ivra=default_ivra), spec)) as st:

        async def hello() -> dict:
            conn = Connection(st.url + "/vla-eval", timeout=30, max_retries=1)
            await conn.connect(benchmark="test")
            await conn.close()
            return conn.server_info

        return anyio.run(hello)


def test_a_vla_eval_run_against_ivra_serve_is_labelled_with_the_served_arm(tmp_path, capsys):
    pytest.importorskip("vla_eval")
    a = export_vla_eval(tmp_path / "a", OUTCOMES_A, server_info=_served_hello(None))
    b = export_vla_eval(tmp_path / "b", OUTCOMES_B, server_info=_served_hello({"layer": 0, "lam": 0.1}))
    rc, out, _err = _compare(capsys, a, b)
    assert rc == 0 and "(vla-eval, arm baseline)" in out and "(vla-eval, arm ivra)" in out
    rc, out, _err = _compare(capsys, a, b, "--arm-a", "base")  # a name given wins
    assert rc == 0 and "(vla-eval, arm base)" in out
    rc, out, _err = _compare(capsys, FIXTURES / "vla_eval_a.json", a)  # not served by ivra: the file's name
    assert rc == 0 and "(vla-eval, arm vla_eval_a)" in out


def test_the_recorded_vla_eval_files_pair_on_suite_task_and_episode(capsys):
    res = _numbers(capsys, FIXTURES / "vla_eval_a.json", FIXTURES / "vla_eval_b.json")
    keys = [(t, e) for (t, e) in sorted(OUTCOMES_A, key=lambda k: json.dumps(k))]
    assert res["paired"] == {
        **paired_ab([OUTCOMES_A[k] for k in keys], [OUTCOMES_B[k] for k in keys]).as_dict(),
        "diff_ci": res["paired"]["diff_ci"],
    }
    assert res["identity"].startswith("benchmark, task, suite")


# --- ivra journals ----------------------------------------------------------------------------------------


def _ivra_journal(path: Path, baseline: list[bool], ivra: list[bool], error_unit: bool = False) -> Path:
    """A journal as `ivra demo` writes it (TabletopABJob units of many episodes) through ivra's own Journal."""
    j = Journal(path)
    for arm, outcomes in (("baseline", baseline), ("ivra", ivra)):
        seeds = list(range(len(outcomes)))
        episodes = [{"split": "novel_object", "seed": s, "success": ok} for s, ok in zip(seeds, outcomes)]
        unit = {
            "key": f"novel_object/{arm}/0-{seeds[-1]}",
            "split": "novel_object",
            "seeds": seeds,
            "arm": arm,
        }
        j.append({"key": unit["key"], "unit": unit, "status": "ok", "result": {"episodes": episodes}})
    if error_unit:
        unit = {"key": "placement/ivra/0-1", "split": "placement", "seeds": [0, 1], "arm": "ivra"}
        j.append({"key": unit["key"], "unit": unit, "status": "error", "error": "boom"})
    return path


def test_one_ivra_journal_compares_its_two_arms(tmp_path, capsys):
    base = [True, False, False, True, False, True]
    ivra = [True, True, False, True, True, True]
    path = _ivra_journal(tmp_path / "journal.jsonl", base, ivra, error_unit=True)
    res = _numbers(capsys, path, tmp_path)  # a file and its run folder are the same run
    assert (res["a"]["arm"], res["b"]["arm"], res["b"]["errors"]) == ("baseline", "ivra", 2)
    assert res["paired"] == {**paired_ab(base, ivra).as_dict(), "diff_ci": res["paired"]["diff_ci"]}
    assert res["power"]["paired_pairs"] > 0 and res["power"]["discordance"] == pytest.approx(2 / 6)
    assert res["sequential"]["n"] == 6 and res["sequential"]["outcome"] == "inconclusive"
    rc, _out, err = _compare(capsys, path, path, "--arm-b", "baseline")
    assert rc == 2 and "the same arm 'baseline'" in err


def test_a_libero_journal_pairs_on_suite_task_init_state_and_seed(tmp_path, capsys):
    """LIBERO units as `ivra eval libero --ab` makes them (ivra.eval.libero.job.make_units), one episode each."""
    from ivra.eval.libero.job import make_units

    units = make_units("libero_spatial", [0, 1], [0, 1, 2], ["baseline", "ivra"], seed=5)
    j = Journal(tmp_path / "journal.jsonl")
    outcome = {}
    for i, unit in enumerate(units):
        ok = (i * 7) % 3 == 0
        outcome[(unit["task_id"], unit["init_state"], unit["arm"])] = ok
        j.append(
            {
                "key": unit["key"],
                "unit": unit,
                "status": "ok",
                "result": {"success": ok, "suite": unit["suite"]},
            }
        )
    res = _numbers(capsys, tmp_path, tmp_path)
    keys = sorted({(t, s) for t, s, _a in outcome})
    base = [outcome[(t, s, "baseline")] for t, s in keys]
    ivra = [outcome[(t, s, "ivra")] for t, s in keys]
    assert res["identity"] == "libero: suite, task id, init state, seed" and res["paired"]["n"] == 6
    assert res["paired"] == {**paired_ab(base, ivra).as_dict(), "diff_ci": res["paired"]["diff_ci"]}


# --- lerobot-eval -----------------------------------------------------------------------------------------


def test_lerobot_eval_info_pairs_on_task_and_episode_index_with_a_seed_warning(capsys):
    res = _numbers(
        capsys, FIXTURES / "lerobot_a" / "eval_info.json", FIXTURES / "lerobot_b" / "eval_info.json"
    )
    assert res["identity"] == "task group, task id, episode index" and res["paired"]["n"] == 4
    assert (res["paired"]["both"], res["paired"]["a_only"], res["paired"]["b_only"]) == (1, 1, 1)
    rc, _out, err = _compare(
        capsys, FIXTURES / "lerobot_a" / "eval_info.json", FIXTURES / "lerobot_b" / "eval_info.json"
    )
    assert rc == 0 and "does not record its seed" in err


# --- refusals ---------------------------------------------------------------------------------------------


def test_a_missing_file_and_an_unknown_format_are_refused_in_one_line(tmp_path, capsys):
    ok = FIXTURES / "vla_eval_a.json"
    rc, out, err = _compare(capsys, tmp_path / "nope.json", ok)
    assert rc == 2 and out == "" and err == f"ivra compare: error: no such file: {tmp_path / 'nope.json'}\n"
    (tmp_path / "other.json").write_text(json.dumps({"accuracy": 0.5}))
    rc, out, err = _compare(capsys, ok, tmp_path / "other.json")
    assert rc == 2 and err.count("\n") == 1 and "is not a result file ivra compare reads" in err
    (tmp_path / "empty").mkdir()
    rc, _out, err = _compare(capsys, tmp_path / "empty", ok)
    assert rc == 2 and "no journal.jsonl in the folder" in err


def test_the_compare_module_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, ivra.integrations.results, ivra.eval.comparecli; print('torch' in sys.modules)"
    env = {**os.environ}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
