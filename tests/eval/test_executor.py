"""execute(): journaling, retries, resume after a real SIGKILL, identical records across executors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ivra.eval.executor import error_summary, execute, format_errors
from ivra.eval.journal import Journal, strip_volatile
from ivra.eval.toy import ToyJob


def _units(n):
    return [{"key": f"u{i:02d}", "x": i} for i in range(n)]


def _canon(records):
    return sorted((strip_volatile(r) for r in records), key=lambda r: (r["key"], r["attempt"]))


def test_inline_runs_every_unit_and_returns_in_order(tmp_path):
    units = _units(5)
    recs = execute(ToyJob(), units, tmp_path / "j.jsonl", progress=False)
    assert [r["key"] for r in recs] == [u["key"] for u in units]
    assert all(r["status"] == "ok" and r["final"] and r["attempt"] == 1 for r in recs)
    assert [r["result"]["square"] for r in recs] == [i * i for i in range(5)]
    assert all(r["result"]["setup_calls"] == 1 for r in recs)  # setup once, lazily
    assert {"elapsed_s", "worker", "executor", "finished_at"} <= set(recs[0]["meta"])


def test_rerun_skips_finished_units(tmp_path):
    j = tmp_path / "j.jsonl"
    execute(ToyJob(), _units(3), j, progress=False)
    recs = execute(ToyJob(), _units(5), j, progress=False)
    assert len(recs) == 5
    lines = Journal(j).records()
    assert sorted(r["key"] for r in lines) == [f"u{i:02d}" for i in range(5)]  # nothing run twice


def test_exceptions_are_recorded_retried_once_and_not_failures(tmp_path):
    job = ToyJob(state_dir=tmp_path / "state", fail_once=("u01",), fail_always=("u03",))
    j = tmp_path / "j.jsonl"
    recs = {r["key"]: r for r in execute(job, _units(4), j, retries=1, progress=False)}
    assert recs["u01"]["status"] == "ok" and recs["u01"]["attempt"] == 2
    bad = recs["u03"]
    assert bad["status"] == "error" and bad["final"] and bad["attempt"] == 2 and bad["result"] is None
    assert "RuntimeError: unit u03 always fails" in bad["error"]
    assert "Traceback" in bad["traceback"] and "toy.py" in bad["traceback"]
    lines = Journal(j).records()
    first = [r for r in lines if r["key"] == "u01" and r["attempt"] == 1][0]
    assert first["status"] == "error" and not first["final"] and "ValueError" in first["traceback"]
    assert len([r for r in lines if r["key"] == "u03"]) == 2  # attempt 1 + its one retry
    # a final error is done: a plain rerun skips it, rerun_errors retries it (attempt numbering continues)
    again = {r["key"]: r for r in execute(job, _units(4), j, progress=False)}
    assert again["u03"]["attempt"] == 2
    again = {r["key"]: r for r in execute(job, _units(4), j, retries=0, rerun_errors=True, progress=False)}
    assert again["u03"]["attempt"] == 3 and again["u03"]["status"] == "error"
    # errors are not counted as failures in the report
    from ivra.eval.report import summarize

    recs = list(again.values())
    for r in recs:
        if r["result"] is not None:
            r["result"]["arm"] = "baseline"
    s = summarize(recs)
    assert s["n_errors"] == 1 and s["suites"][0]["n"] == 3


def test_a_unit_rerun_after_its_error_is_reported_by_its_latest_record(tmp_path):
    """error -> fixed and rerun with rerun_errors -> ok; a plain resume after that reports the ok record, not the
    old error (the journal keeps both final records)."""
    j = tmp_path / "j.jsonl"
    recs = execute(ToyJob(fail_always=("u01",)), _units(3), j, retries=0, progress=False)
    assert [r["status"] for r in recs] == ["ok", "error", "ok"]
    recs = execute(ToyJob(), _units(3), j, retries=0, rerun_errors=True, progress=False)
    assert [r["status"] for r in recs] == ["ok", "ok", "ok"] and recs[1]["attempt"] == 2
    again = execute(ToyJob(fail_always=("u01",)), _units(3), j, retries=0, progress=False)  # nothing reruns
    assert [(r["status"], r["attempt"]) for r in again] == [("ok", 1), ("ok", 2), ("ok", 1)]
    finals = Journal(j).final_records()
    assert finals["u01"]["status"] == "ok" and len([r for r in Journal(j).records() if r["key"] == "u01"]) == 2


def test_bad_units_rejected(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        execute(ToyJob(), [{"key": "a"}, {"key": "a"}], tmp_path / "j.jsonl", progress=False)
    with pytest.raises(ValueError, match="key"):
        execute(ToyJob(), [{"x": 1}], tmp_path / "j.jsonl", progress=False)
    with pytest.raises(ValueError, match="executor"):
        execute(ToyJob(), [], tmp_path / "j.jsonl", executor="threads", progress=False)


_RUNNER = """
import sys
from ivra.eval.executor import error_summary, execute, format_errors
from ivra.eval.toy import ToyJob
units = [{"key": f"u{i:02d}", "x": i} for i in range(int(sys.argv[2]))]
execute(ToyJob(sleep_s=float(sys.argv[3])), units, sys.argv[1], executor="local", workers=2, progress=False)
"""


def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path, subprocess_env):
    n, j = 12, tmp_path / "j.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, str(j), str(n), "0.5"], env=subprocess_env, start_new_session=True
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            done = len(Journal(j).done_keys()) if j.exists() else 0
            if done >= 4:
                break
            assert proc.poll() is None, "runner ended early"
            time.sleep(0.05)
        else:
            pytest.fail("runner journaled nothing in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its spawn workers, mid-run
        proc.wait()
    killed_at = Journal(j).done_keys()
    assert 4 <= len(killed_at) < n
    with open(j, "a") as fh:  # and a write torn by the kill
        fh.write('{"key": "u11", "status": "ok", "fin')
    with pytest.warns(UserWarning, match="truncated"):
        recs = execute(ToyJob(), _units(n), j, executor="inline", progress=False)
    assert [r["key"] for r in recs] == [u["key"] for u in _units(n)]
    lines = Journal(j).records()
    finals = [r["key"] for r in lines if r["final"]]
    assert sorted(finals) == [u["key"] for u in _units(n)]  # each unit exactly once
    assert all(r["status"] == "ok" for r in lines)
    reran = {r["key"] for r in lines if r["meta"]["executor"] == "inline"}
    assert not reran & killed_at  # finished units were not redone
    json.loads(j.read_text().splitlines()[-1])  # the file is valid JSONL again


def _compare_job(tmp_path, name):
    return ToyJob(state_dir=tmp_path / name, fail_once=("u02",), fail_always=("u05",))


def test_local_matches_inline(tmp_path):
    units = _units(8)
    a = execute(_compare_job(tmp_path, "i"), units, tmp_path / "i.jsonl", progress=False)
    b = execute(
        _compare_job(tmp_path, "l"), units, tmp_path / "l.jsonl", executor="local", workers=2, progress=False
    )
    assert _canon(Journal(tmp_path / "i.jsonl").records()) == _canon(Journal(tmp_path / "l.jsonl").records())
    assert _canon(a) == _canon(b)
    assert {r["meta"]["executor"] for r in b} == {"local"}
    assert len({r["meta"]["worker"] for r in b}) >= 1


@pytest.mark.ray
def test_ray_matches_inline(tmp_path):
    import ray

    units = _units(8)
    execute(_compare_job(tmp_path, "i"), units, tmp_path / "i.jsonl", progress=False)
    try:
        b = execute(
            _compare_job(tmp_path, "r"),
            units,
            tmp_path / "r.jsonl",
            executor="ray",
            workers=2,
            progress=False,
        )
    finally:
        ray.shutdown()
    assert _canon(Journal(tmp_path / "i.jsonl").records()) == _canon(Journal(tmp_path / "r.jsonl").records())
    assert {r["meta"]["executor"] for r in b} == {"ray"}


def test_teardown_runs_once_in_every_process_that_ran_setup(tmp_path):
    state = tmp_path / "inline"
    execute(ToyJob(state_dir=state), _units(3), tmp_path / "a.jsonl", progress=False)
    assert sorted(p.name for p in (state / "teardown").iterdir()) == [str(os.getpid())]
    state = tmp_path / "local"
    execute(
        ToyJob(state_dir=state), _units(4), tmp_path / "b.jsonl", executor="local", workers=2, progress=False
    )
    setups = sorted(p.name for p in (state / "setup").iterdir())
    assert setups and sorted(p.name for p in (state / "teardown").iterdir()) == setups
    assert str(os.getpid()) not in setups


def test_error_summary_counts_per_arm_and_names_the_first_error(tmp_path):
    units = [{"key": f"{arm}/{i}", "arm": arm, "x": i} for arm in ("baseline", "ivra") for i in range(3)]
    job = ToyJob(fail_always=("ivra/0", "ivra/2"))
    recs = execute(job, units, tmp_path / "j.jsonl", retries=0, progress=False)
    (row,) = error_summary(recs)
    assert row == {
        "arm": "ivra",
        "units": 3,
        "errors": 2,
        "first_error": "RuntimeError: unit ivra/0 always fails",
        "first_key": "ivra/0",
    }
    text = format_errors([row], tmp_path / "j.jsonl")
    assert "arm ivra: 2 of 3 unit(s) failed" in text and "--rerun-errors" in text
    assert error_summary([r for r in recs if r["unit"]["arm"] == "baseline"]) == []
    assert format_errors([]) == ""


def test_lockstep_batches_journal_every_unit_and_retry_only_the_failed_one(tmp_path):
    """lockstep=3: the job gets 3 units at a time; each unit is its own record (the failed lane's error is its own,
    its batch mates are ok and not rerun), the failed unit is retried in a later batch; the records equal those of
    lockstep=1 up to meta."""
    from job_helpers import LockstepToy

    units = _units(7)
    job = LockstepToy(state_dir=tmp_path / "s3", fail_once=("u01",), fail_always=("u05",))
    recs = execute(job, units, tmp_path / "k3.jsonl", retries=1, lockstep=3, progress=False)
    # the retries queue up behind the units not yet run: [u00 u01 u02] [u03 u04 u05] [u06 u01 u05]
    assert job.batch_sizes == [3, 3, 3]
    lines = Journal(tmp_path / "k3.jsonl").records()
    assert len(lines) == 7 + 2 and len({r["key"] for r in lines}) == 7
    first = {r["key"]: r for r in lines if r["attempt"] == 1}
    batch = {k: r["meta"]["lockstep"]["batch"] for k, r in first.items()}
    assert batch["u00"] == batch["u01"] == batch["u02"] and batch["u03"] != batch["u00"]
    assert first["u01"]["status"] == "error" and not first["u01"]["final"]
    assert "ValueError: unit u01 fails on its first attempt" in first["u01"]["error"]
    assert "toy.py" in first["u01"]["traceback"]  # the lane's own traceback
    assert first["u00"]["status"] == first["u02"]["status"] == "ok"  # its batch mates are kept
    retried = {r["key"]: r["meta"]["lockstep"]["batch"] for r in lines if r["attempt"] == 2}
    assert retried["u01"] == retried["u05"] == batch["u06"]
    by_key = {r["key"]: r for r in recs}
    assert by_key["u01"]["status"] == "ok" and by_key["u01"]["attempt"] == 2
    assert by_key["u05"]["status"] == "error" and by_key["u05"]["attempt"] == 2 and by_key["u05"]["final"]
    one = execute(
        LockstepToy(state_dir=tmp_path / "s1", fail_once=("u01",), fail_always=("u05",)),
        units,
        tmp_path / "k1.jsonl",
        retries=1,
        progress=False,
    )
    assert _canon(recs) == _canon(one)


def test_a_batch_that_raises_is_an_error_record_for_each_unit(tmp_path):
    from job_helpers import LockstepToy

    job = LockstepToy(break_batch=("u01",))
    recs = execute(job, _units(4), tmp_path / "j.jsonl", retries=0, lockstep=2, progress=False)
    assert [r["status"] for r in recs] == ["error", "error", "ok", "ok"]
    assert all("RuntimeError: the whole batch broke" in r["error"] for r in recs[:2])
    with pytest.raises(ValueError, match="lockstep must be >= 1"):
        execute(job, _units(1), tmp_path / "x.jsonl", lockstep=0, progress=False)


def test_lockstep_spreads_units_over_workers_and_local_matches_inline(tmp_path):
    """8 units, 2 workers, lockstep 8: each worker gets 4 (its share), not one worker all 8; a job without
    run_lockstep runs its batch one unit at a time; local records equal inline ones."""
    from job_helpers import LockstepToy

    units = _units(8)
    a = execute(
        LockstepToy(state_dir=tmp_path / "i", fail_once=("u02",)), units, tmp_path / "i.jsonl", progress=False
    )
    b = execute(
        LockstepToy(state_dir=tmp_path / "l", fail_once=("u02",)),
        units,
        tmp_path / "l.jsonl",
        executor="local",
        workers=2,
        lockstep=8,
        progress=False,
    )
    assert _canon(a) == _canon(b)
    sizes = [
        r["meta"]["lockstep"]["size"] for r in Journal(tmp_path / "l.jsonl").records() if r["attempt"] == 1
    ]
    assert sorted(sizes) == [4] * 8
    c = execute(ToyJob(), units, tmp_path / "t.jsonl", lockstep=3, progress=False)
    assert [r["result"]["square"] for r in c] == [i * i for i in range(8)]
    assert all("lockstep" not in r["meta"] for r in c)


@pytest.mark.ray
def test_ray_lockstep_matches_inline(tmp_path, monkeypatch):
    import ray
    from job_helpers import LockstepToy

    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__))  # the actors import job_helpers
    units = _units(7)
    a = execute(LockstepToy(state_dir=tmp_path / "i", fail_once=("u02",)), units, tmp_path / "i.jsonl", progress=False)  # fmt: skip
    try:
        b = execute(
            LockstepToy(state_dir=tmp_path / "r", fail_once=("u02",)),
            units,
            tmp_path / "r.jsonl",
            executor="ray",
            workers=2,
            lockstep=3,
            progress=False,
        )
    finally:
        ray.shutdown()
    assert _canon(a) == _canon(b)
    first = [r for r in Journal(tmp_path / "r.jsonl").records() if r["attempt"] == 1]
    assert max(r["meta"]["lockstep"]["size"] for r in first) == 3 and {
        r["meta"]["executor"] for r in first
    } == {"ray"}
