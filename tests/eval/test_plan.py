"""`ivra plan`: a pilot's values, its measured episodes per hour, the cost in hours, and what it refuses."""

from __future__ import annotations

import json

import pytest

from ivra.cli import main


def write_pilot(folder, both=28, base_only=2, ivra_only=8, neither=22, elapsed=30.0, lockstep=False):
    """A LIBERO-style journal of a paired A/B: one record per episode and arm, each taking ``elapsed`` s (with
    ``lockstep``, every two records of an arm share one batch and its time)."""
    folder.mkdir(parents=True, exist_ok=True)
    outcomes = [(1, 1)] * both + [(1, 0)] * base_only + [(0, 1)] * ivra_only + [(0, 0)] * neither
    lines = []
    for i, pair in enumerate(outcomes):
        for arm, ok in zip(("baseline", "ivra"), pair):
            meta = {"elapsed_s": elapsed, "worker": "w:1", "executor": "local"}
            if lockstep:
                meta["lockstep"] = {"batch": f"{arm}-{i // 2}", "size": 2}
            unit = {"arm": arm, "suite": "libero_spatial", "task_id": i % 10, "init_state": i // 10}
            rec = {"key": f"{arm}/{i}", "status": "ok", "unit": unit, "meta": meta}
            rec["result"] = {"success": bool(ok), "seed": i}
            lines.append(json.dumps(rec))
    (folder / "journal.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def run(argv, capsys):
    try:
        code = main(["plan", *argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_pilot_values_hours_and_the_plain_sentence(tmp_path, capsys):
    """60 pairs: baseline 30/60 = 50 % (read from the baseline arm, not IVRA's 36/60), 10 discordant (16.7 %);
    120 episodes of 30 s each = 120 episodes per hour per worker; the last line is one plain sentence with the
    pairs, the episodes and the hours; --hours gives the workers."""
    pilot = write_pilot(tmp_path / "pilot")
    code, out, err = run(["--pilot", str(pilot), "--effect", "0.05", "--hours", "2"], capsys)
    assert code == 0, err
    assert "pilot: 60 pairs, baseline 50.0 %, discordant 16.7 % (baseline only 2, IVRA only 8)" in out
    assert "120 episodes per hour per worker (120 episodes in 1.00 worker-hours" in out
    from ivra.eval.groupseq import plan_group
    from ivra.eval.power import paired_pairs

    n = paired_pairs(0.05, 10 / 60)
    g = plan_group(n, 0.05, 10 / 60)
    last = out.strip().splitlines()[-1]
    assert last.startswith(
        f"To detect +5.0 pp (this A/B): about {n} pairs, {2 * n} episodes with the fixed design"
    )
    assert f"{2 * n / 120:.1f} worker-hours fixed" in last and f"at most {2 * g.max_pairs}" in last
    workers = -(-2 * g.max_pairs // (120 * 2))
    assert last.endswith(f"{workers} worker(s) to be sure of 2 h.")
    assert f"| this A/B | {2 * n} | {2 * g.max_pairs} ({g.looks[0]}) |" in out


def test_lockstep_batches_count_their_time_once(tmp_path):
    from ivra.eval.power import read_throughput

    rate = read_throughput(write_pilot(tmp_path / "p", lockstep=True))
    assert rate.episodes == 120 and rate.worker_s == 60 * 30.0 and rate.per_hour == 240


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--hours", "0"], "argument --hours: expected a number > 0, got '0'"),
        (["--pilot", "{pilot}"], "missing: --effect, the difference to detect"),
        (
            ["--pilot", "{tiny}", "--effect", "0.02"],
            "1 pair(s) is too small to plan from; a pilot needs at least 50",
        ),
        (["--pilot", "{same}", "--effect", "0.02"], "0 discordant pair(s) of 60 is too few"),
        (["--pilot", "{allok}", "--effect", "0.02"], "the baseline succeeded in 100 % of 60 pairs"),
        (
            ["--pilot", "{untimed}", "--effect", "0.02", "--hours", "3"],
            "--hours 3: needs a --pilot run whose journal",
        ),
    ],
    ids=["hours0", "no-effect", "tiny", "no-discordant", "all-success", "no-timings"],
)
def test_bad_plans_are_one_line_exit_2(tmp_path, capsys, argv, message):
    paths = {
        "pilot": write_pilot(tmp_path / "pilot"),
        "tiny": write_pilot(tmp_path / "tiny", both=0, base_only=0, ivra_only=1, neither=0),
        "same": write_pilot(tmp_path / "same", both=30, base_only=0, ivra_only=0, neither=30),
        "allok": write_pilot(tmp_path / "allok", both=50, base_only=10, ivra_only=0, neither=0),
    }
    untimed = write_pilot(tmp_path / "untimed")
    lines = [json.loads(x) for x in (untimed / "journal.jsonl").read_text().splitlines()]
    for rec in lines:
        rec["meta"]["elapsed_s"] = None
    (untimed / "journal.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    paths["untimed"] = untimed
    code, out, err = run([a.format(**{k: str(v) for k, v in paths.items()}) for a in argv], capsys)
    assert code == 2
    assert out == "" and len(err.strip().splitlines()) == 1 and message in err, err


def test_power_statement_is_in_the_demo_table(tmp_path):
    """The planner's power: the smallest difference n pairs detect, consistent with the planner's pair count."""
    from ivra.eval.power import detectable, paired_pairs, power_statement

    d = detectable(1117, 0.057)
    assert 0.019 < d <= 0.0201 and paired_pairs(d, 0.057) <= 1117 + 1
    assert detectable(10, 0.0) is None
    assert "detects a difference of +-2.0 pp with 80% power" in power_statement(1117, round(0.057 * 1117))
