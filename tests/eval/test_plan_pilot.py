"""`ivra plan --pilot`: the values read from a finished paired run (its baseline rate and discordant share), from a
LIBERO journal and from an `ivra demo` results.json, and the plan built on them."""

from __future__ import annotations

import json

import pytest

from ivra.cli import main
from ivra.eval.power import read_pilot

# a pilot of 300 pairs: both arms succeed in 164, only the baseline in 16, only IVRA in 44, neither in 76;
# baseline 180/300 = 60 %, IVRA 208/300 = 69.3 %, discordant 60/300 = 20 %
TABLE = {(True, True): 164, (True, False): 16, (False, True): 44, (False, False): 76}


def _pairs():
    return [cell for cell, count in TABLE.items() for _ in range(count)]


def _libero_journal(path):
    lines = []
    for i, outcomes in enumerate(_pairs()):
        for arm, success in zip(("baseline", "ivra"), outcomes):
            unit = {"key": f"libero_spatial/t{i % 10:02d}/s{i // 10:02d}/{arm}", "suite": "libero_spatial",
                    "task_id": i % 10, "init_state": i // 10, "seed": i // 10, "arm": arm}  # fmt: skip
            result = {
                "suite": "libero_spatial",
                "task_id": i % 10,
                "seed": i // 10,
                "arm": arm,
                "success": success,
            }
            lines.append(
                json.dumps(
                    {"key": unit["key"], "unit": unit, "status": "ok", "final": True, "result": result}
                )
            )
    path.write_text("\n".join(lines) + "\n")


def _demo_results(path):
    """Two splits of 150 pairs each (the table split in halves) and the pooled row, as `ivra demo` writes them."""
    rows, half = [], {cell: count // 2 for cell, count in TABLE.items()}
    for split in ("val", "test"):
        n = sum(half.values())
        rows.append({"split": split, "n": n, "baseline": (half[True, True] + half[True, False]) / n,
                     "ivra": (half[True, True] + half[False, True]) / n, "baseline_only": half[True, False],
                     "ivra_only": half[False, True]})  # fmt: skip
    rows.append({**rows[0], "split": "all", "n": 300, "baseline_only": 16, "ivra_only": 44})
    path.write_text(json.dumps({"summary": {"rows": rows}}))


@pytest.mark.parametrize("kind", ["libero journal", "demo results.json"])
def test_pilot_values_are_the_baseline_arms(kind, tmp_path, capsys):
    if kind == "libero journal":
        _libero_journal(tmp_path / "journal.jsonl")
    else:
        _demo_results(tmp_path / "results.json")
    pilot = read_pilot(tmp_path)
    assert (pilot.n, pilot.both, pilot.baseline_only, pilot.ivra_only) == (300, 164, 16, 44)
    assert (pilot.baseline, pilot.discordance) == (0.6, 0.2)
    assert main(["plan", "--pilot", str(tmp_path), "--effect", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "| this A/B | 60.0 | 65.0 | +5.0 | 20.0 (pilot " in out, out
