"""Validate the sequential paired A/B (ivra.eval.sequential) by simulation: type-I error, power, episodes spent.

    .venv/bin/python benchmarks/sequential_ab.py [--runs 200] [--record]

Scenarios:
* the project's recorded tabletop A/Bs (docs/results/demo, docs/results/demo-full: 4 x 1000 pairs each, as a 2x2
  table of pair outcomes), pairs resampled with the arms swapped at random: the null (true difference 0), for the
  type-I error and the cost of stopping for futility;
* synthetic pairs at the paper's three claims (baseline and IVRA rates), with the discordant share measured on our
  tabletop A/B (pairing that helps) and the null at the same rates.

For each scenario the fixed paired design is planned at alpha 0.05 and power 0.8 (Connor 1987, ivra.eval.power) and
simulated with McNemar's exact test. The sequential design checks its anytime-valid interval after every round
(1/20 of the fixed size, at least 50 pairs), with delta = the claimed effect (futility margin), and is simulated up
to 2x the fixed size with its bets tuned for the fixed size (ivra.eval.sequential, ``horizon``); its maximum is
then the smallest of 1, 1.25, 1.5, 2 x the fixed size at which its power reaches the fixed design's. The A/B
verbs' design (bets tuned for 2/3 of the maximum) is the 1.5x one. Reported: type-I error (share of null runs that stop with an effect) with its Wilson interval,
power, and the mean pairs spent against the fixed size. Writes runs/benchmarks/sequential_ab.json
($IVRA_BENCH_OUT_DIR elsewhere); --record (or IVRA_BENCH_RECORD=1) writes benchmarks/results/sequential_ab.json and
benchmarks/sequential_ab.md instead.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from ivra.eval.power import PAPER_CLAIMS, paired_pairs, read_pilot
from ivra.eval.sequential import PairedCS, decide
from ivra.eval.stats import wilson

ROOT = Path(__file__).resolve().parents[1]
MULTIPLES = (1.0, 1.25, 1.5, 2.0)
SHIPPED = 1.5  # the A/B verbs tune the bets for 2/3 of their maximum: here the fixed size, max 1.5x


def draw(rng, n, cells):
    """n pairs (baseline, ivra) from probabilities (baseline only, ivra only, both, neither)."""
    idx = rng.choice(4, size=n, p=cells)
    return [(i in (0, 2), i in (1, 2)) for i in idx]


def sequential_run(rng, cells, n_max, round_size, delta, horizon):
    """One sequential A/B up to n_max pairs, bets tuned for ``horizon`` pairs: (outcome, effect sign or 0, pairs)."""
    cs = PairedCS(alpha=0.05, horizon=horizon)
    while cs.n < n_max:
        cs.extend(draw(rng, min(round_size, n_max - cs.n), cells))
        d = decide(cs, delta, max_pairs=n_max)
        if d.stop:
            sign = 0 if d.outcome != "effect" else (1 if d.interval[0] > 0 else -1)
            return d.outcome, sign, cs.n
    return "inconclusive", 0, cs.n


def fixed_power(rng, cells, n, runs):
    hits = 0
    for _ in range(runs):
        c = rng.multinomial(n, cells)
        a_only, b_only = int(c[0]), int(c[1])
        if a_only + b_only and binomtest(b_only, a_only + b_only).pvalue < 0.05 and b_only > a_only:
            hits += 1
    return hits / runs


def scenario(rng, name, cells, effect, delta, n_fixed, runs):
    """Simulate one scenario (``effect`` 0: the null), up to 2x the fixed size; results per maximum multiple."""
    round_size = max(50, n_fixed // 20)
    t0 = time.time()
    n_max = int(MULTIPLES[-1] * n_fixed)
    results = [sequential_run(rng, cells, n_max, round_size, delta, n_fixed) for _ in range(runs)]
    out = {
        "name": name,
        "cells": list(cells),
        "n_fixed": n_fixed,
        "round": round_size,
        "delta": delta,
        "runs": runs,
    }
    per_k = []
    for k in MULTIPLES:
        cap = int(k * n_fixed)
        row = {"max_multiple": k, "mean_pairs": float(np.mean([min(n, cap) for _, _, n in results]))}
        if effect:
            row["power"] = float(np.mean([o == "effect" and s == 1 and n <= cap for o, s, n in results]))
        else:
            wrong = sum(o == "effect" and n <= cap for o, _, n in results)
            row["type1"], row["type1_ci"] = wrong / runs, list(wilson(wrong, runs))
            row["futility"] = float(np.mean([o == "futility" and n <= cap for o, _, n in results]))
        per_k.append(row)
    out["sequential"] = per_k
    if effect:
        out["fixed_power"] = fixed_power(rng, cells, n_fixed, 2000)
        ok = [r for r in per_k if r["power"] >= out["fixed_power"]]
        out["chosen"] = ok[0] if ok else per_k[-1]
        out["equal_power_reached"] = bool(ok)
        out["saving"] = 1 - out["chosen"]["mean_pairs"] / n_fixed
        out["shipped"] = next(r for r in per_k if r["max_multiple"] == SHIPPED)
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps({k: v for k, v in out.items() if k != "cells"}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="simulated runs per scenario (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    ap.add_argument("--record", action="store_true", help="write the recorded results under benchmarks/")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    record = args.record or os.environ.get("IVRA_BENCH_RECORD") not in (None, "", "0")
    rows = []
    for folder in ("demo", "demo-full"):
        pilot = read_pilot(ROOT / "docs" / "results" / folder)
        psi = pilot.discordance
        both = pilot.both / pilot.n
        neither = 1 - both - psi
        n_fixed = paired_pairs(0.02, psi)
        # the null: arms swapped at random -> both discordant cells get half of the discordant share
        rows.append(
            scenario(
                rng,
                f"tabletop {folder}: recorded pairs, arms swapped (null), delta 2 pp",
                [psi / 2, psi / 2, both, neither],
                0,
                0.02,
                n_fixed,
                args.runs,
            )
        )
    psi = read_pilot(ROOT / "docs" / "results" / "demo").discordance
    for name, (p1, p2) in PAPER_CLAIMS.items():
        eff = p2 - p1
        disc = max(psi, 1.5 * eff)
        both = p1 - (disc - eff) / 2
        neither = 1 - both - disc
        n_fixed = paired_pairs(eff, disc)
        cells = [(disc - eff) / 2, (disc + eff) / 2, both, neither]
        rows.append(
            scenario(
                rng,
                f"{name}: +{100 * eff:.1f} pp, {100 * disc:.1f} % discordant",
                cells,
                eff,
                eff,
                n_fixed,
                args.runs,
            )
        )
        both0 = p1 - disc / 2
        rows.append(
            scenario(
                rng,
                f"{name}: null at {100 * p1:.1f} %, {100 * disc:.1f} % discordant, delta {100 * eff:.1f} pp",
                [disc / 2, disc / 2, both0, 1 - both0 - disc],
                0,
                eff,
                n_fixed,
                args.runs,
            )
        )
    result = {"runs": args.runs, "seed": args.seed, "scenarios": rows}
    out_dir = (
        ROOT / "benchmarks" / "results"
        if record
        else Path(os.environ.get("IVRA_BENCH_OUT_DIR", ROOT / "runs" / "benchmarks"))
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sequential_ab.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    if record:
        (ROOT / "benchmarks" / "sequential_ab.md").write_text(md)
    print(md)
    print(f"wrote {out_dir / 'sequential_ab.json'}")


def markdown(result: dict) -> str:
    lines = [
        "# Sequential paired A/B: simulated type-I error, power and episodes spent",
        "",
        f"Made by `.venv/bin/python benchmarks/sequential_ab.py --runs {result['runs']} --record` (seed "
        f"{result['seed']}); raw numbers in `results/sequential_ab.json`. Pairs = episodes per arm. The sequential "
        "design tunes its bets for the fixed size; its maximum is the smallest multiple of the fixed size (1, 1.25, "
        "1.5, 2) at which its simulated power reaches the fixed design's. The A/B verbs' design (`--sequential`: "
        "bets tuned for 2/3 of `--episodes`) is the 1.5x one.",
        "",
        "| scenario | fixed design: pairs (power) | sequential at equal power: max, power | mean pairs | saving | "
        "verbs' design (max 1.5x): power, mean pairs |",
        "|---|---:|---|---:|---:|---|",
    ]
    for r in result["scenarios"]:
        if "chosen" not in r:
            continue
        c = r["chosen"]
        lines.append(
            f"| {r['name']} | {r['n_fixed']} ({100 * r['fixed_power']:.0f} %) | {c['max_multiple']}x, "
            f"{100 * c['power']:.0f} %{'' if r['equal_power_reached'] else ' (below the fixed power)'} | "
            f"{c['mean_pairs']:.0f} | {100 * r['saving']:+.0f} % | {100 * r['shipped']['power']:.0f} %, "
            f"{r['shipped']['mean_pairs']:.0f} |"
        )
    lines += [
        "",
        "Under the null (true difference 0), per maximum multiple of the fixed size: type-I error (runs that stopped "
        "with an effect) with its 95 % Wilson interval, runs stopped for futility, mean pairs spent.",
        "",
        "| null scenario | fixed pairs | " + " | ".join(f"max {k}x" for k in MULTIPLES) + " |",
        "|---|---:|" + "---|" * len(MULTIPLES),
    ]
    for r in result["scenarios"]:
        if "chosen" in r:
            continue
        cells = [
            f"{100 * k['type1']:.1f} % [{100 * k['type1_ci'][0]:.1f}, {100 * k['type1_ci'][1]:.1f}], futility "
            f"{100 * k['futility']:.0f} %, {k['mean_pairs']:.0f} pairs"
            for k in r["sequential"]
        ]
        lines.append(f"| {r['name']} | {r['n_fixed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
