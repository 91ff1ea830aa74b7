"""``ivra plan``: how many episodes an A/B needs (paired and unpaired; fixed and group-sequential designs), from
assumed rates or a pilot run, and, from the pilot's measured episodes per hour, what the verdict costs in hours."""

from __future__ import annotations

import argparse
import math

from ivra.cliargs import UsageError, open_unit_float, positive_float


def _effect(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a difference of rates in (-1, 1), e.g. 0.02, got {text!r}"
        ) from None
    if not 0 < abs(v) < 1:
        raise argparse.ArgumentTypeError(f"expected a non-zero difference of rates in (-1, 1), got {text!r}")
    return v


def _row(name: str, p) -> str:
    return (
        f"| {name} | {100 * p.baseline:.1f} | {100 * p.treated:.1f} | {100 * (p.treated - p.baseline):+.1f} | "
        f"{100 * p.discordance:.1f} ({p.discordance_source}) | {p.paired_pairs} ({2 * p.paired_pairs}) | "
        f"{p.unpaired_per_arm} ({2 * p.unpaired_per_arm}) |"
    )


HEADER = (
    "| A/B | baseline % | IVRA % | effect (pp) | discordant pairs % | paired: pairs (episodes) | "
    "unpaired: per arm (episodes) |\n|---|---:|---:|---:|---|---:|---:|"
)


def cmd_plan(args: argparse.Namespace) -> int:
    from ivra.eval.power import PAPER_CLAIMS, check_pilot, plan, read_pilot, read_throughput

    if args.pilot and args.discordance is not None:
        raise UsageError("give --pilot (a run to measure the discordance from) or --discordance, not both")
    if args.pilot and args.effect is None:
        raise UsageError(
            f"--pilot {args.pilot}: the pilot gives the baseline and the discordance; missing: --effect, the "
            "difference to detect (e.g. --effect 0.02 for +2 pp)"
        )
    discordance, source, baseline, rate = args.discordance, None, args.baseline, None
    if args.pilot:
        try:
            pilot = read_pilot(args.pilot)
            check_pilot(pilot)
        except ValueError as exc:
            raise UsageError(f"--pilot {args.pilot}: {exc}") from None
        discordance, source = pilot.discordance, f"pilot {pilot.source}, {pilot.n} pairs"
        baseline = baseline or pilot.baseline
        rate = read_throughput(args.pilot)
        _check_hours(args, rate)
        print(
            f"pilot: {pilot.n} pairs, baseline {100 * pilot.baseline:.1f} %, discordant {100 * discordance:.1f} % "
            f"(baseline only {pilot.baseline_only}, IVRA only {pilot.ivra_only})"
            + (
                f"; {rate.per_hour:.0f} episodes per hour per worker ({rate.episodes} episodes in "
                f"{rate.worker_s / 3600:.2f} worker-hours, {rate.source})"
                if rate
                else "; no timings (no journal with elapsed times next to it): hours not computed"
            )
        )
    _check_hours(args, rate)
    rows = []
    try:
        if baseline is not None or args.effect is not None:
            if baseline is None or args.effect is None:
                raise UsageError(
                    "--effect needs --baseline (or a --pilot to read it from), and the other way round"
                )
            rows.append(
                ("this A/B", plan(baseline, args.effect, args.alpha, args.power, discordance, source))
            )
        if args.paper or not rows:
            for name, (a, b) in PAPER_CLAIMS.items():
                rows.append((f"paper: {name}", plan(a, b - a, args.alpha, args.power, discordance, source)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(
        f"Episodes for a two-sided test at alpha {args.alpha} with power {args.power} "
        "(paired: McNemar, Connor 1987; unpaired: two-proportion z test):\n"
    )
    print(HEADER)
    for name, p in rows:
        print(_row(name, p))
    print(
        "\nPairing saves as far as the arms agree on the same units: the discordant share is the pilot's when given, "
        "else that of independent arms (no saving)."
    )
    designs = [(name, p, _designs(p, args)) for name, p in rows]
    print("\n" + DESIGN_HEADER)
    for name, _, d in designs:
        print(_design_rows(name, d, rate))
    print(
        "\ngroup: `--design group` (the A/B verbs' default; exact group-sequential test, ivra.eval.groupseq) sized "
        "for the same power, 30 planned rounds of the pairs shown; expected episodes if the effect is real and if "
        "there is none. anytime: `--design anytime` with `--episodes` at 1.5x the fixed size (its expected episodes: "
        "benchmarks/sequential_ab.md)."
    )
    if rate and args.hours is not None:
        print(f"\nWorkers for a verdict within {args.hours:g} h at {rate.per_hour:.0f} episodes/hour/worker:")
        for name, _, d in designs:
            parts = [
                f"{k}: {_workers(e, rate, args.hours)} (at most {_workers(m, rate, args.hours)})"
                for k, (e, m) in (
                    ("fixed", (d["fixed"], d["fixed"])),
                    ("group", (d["group_alt"], d["group_max"])),
                )
            ]
            print(f"- {name}: " + "; ".join(parts))
    print("\n" + _sentence(designs, rate, args.hours))
    return 0


def _check_hours(args, rate) -> None:
    if args.hours is not None and rate is None:
        raise UsageError(
            f"--hours {args.hours:g}: needs a --pilot run whose journal has timings (a run folder with journal.jsonl) "
            "to measure episodes per hour from" + (f"; {args.pilot} has none" if args.pilot else "")
        )


DESIGN_HEADER = (
    "| A/B | fixed: episodes | group: max episodes (round: pairs) | group: expected if real / if none | anytime: max "
    "episodes | worker-hours: fixed / group expected / group max |\n|---|---:|---:|---|---:|---|"
)


def _designs(p, args) -> dict:
    from ivra.eval.groupseq import plan_group

    n = p.paired_pairs
    g = plan_group(n, p.treated - p.baseline, p.discordance, args.alpha, args.power)
    return {
        "fixed": 2 * n,
        "group_max": 2 * g.max_pairs,
        "group_round": g.looks[0],
        "group_alt": round(2 * g.mean_pairs_alternative),
        "group_null": round(2 * g.mean_pairs_null),
        "anytime_max": 2 * math.ceil(1.5 * n),
        "effect": p.treated - p.baseline,
    }


def _hours(episodes: int, rate) -> str:
    return f"{episodes / rate.per_hour:.1f}" if rate else "-"


def _design_rows(name: str, d: dict, rate) -> str:
    return (
        f"| {name} | {d['fixed']} | {d['group_max']} ({d['group_round']}) | {d['group_alt']} / {d['group_null']} | "
        f"{d['anytime_max']} | {_hours(d['fixed'], rate)} / {_hours(d['group_alt'], rate)} / "
        f"{_hours(d['group_max'], rate)} |"
    )


def _workers(episodes: int, rate, hours: float) -> int:
    return max(1, math.ceil(episodes / rate.per_hour / hours))


def _sentence(designs, rate, hours) -> str:
    """One plain sentence: what the (first) A/B needs."""
    name, p, d = designs[0]
    what = "this A/B" if name == "this A/B" else name.removeprefix("paper: ")
    text = (
        f"To detect {100 * d['effect']:+.1f} pp ({what}): about {p.paired_pairs} pairs, {d['fixed']} episodes with "
        f"the fixed design; the group design expects {d['group_alt']} episodes if the effect is real and "
        f"{d['group_null']} if there is none, at most {d['group_max']} (30 rounds of {d['group_round']} pairs)"
    )
    if rate:
        text += (
            f"; at {rate.per_hour:.0f} episodes per hour per worker that is {d['fixed'] / rate.per_hour:.1f} "
            f"worker-hours fixed, {d['group_alt'] / rate.per_hour:.1f} expected and "
            f"{d['group_max'] / rate.per_hour:.1f} at most for the group design"
        )
        if hours is not None:
            text += f", {_workers(d['group_max'], rate, hours)} worker(s) to be sure of {hours:g} h"
    return text + "."


def register(subparsers: argparse._SubParsersAction) -> None:
    if "plan" in subparsers.choices:
        return
    p = subparsers.add_parser(
        "plan",
        help="episodes an A/B needs: paired and unpaired designs, from assumed rates or a pilot run",
        description="Without --baseline/--effect it prints what the paper's three claims would need.",
    )
    p.add_argument("--baseline", type=open_unit_float, default=None, help="baseline success rate, e.g. 0.45")
    p.add_argument("--effect", type=_effect, default=None, help="difference to detect, e.g. 0.02 (2 pp)")
    p.add_argument(
        "--alpha", type=open_unit_float, default=0.05, help="two-sided significance level (default 0.05)"
    )
    p.add_argument("--power", type=open_unit_float, default=0.8, help="power (default 0.8)")
    p.add_argument(
        "--discordance",
        type=open_unit_float,
        default=None,
        help="share of pairs whose arms disagree (default: as for independent arms, or the pilot's)",
    )
    p.add_argument(
        "--pilot",
        default=None,
        help="a finished paired run to read the baseline and discordance from: an `ivra demo` folder or "
        "results.json, or a journal.jsonl of `ivra demo` / `ivra eval libero --ab`",
    )
    p.add_argument("--paper", action="store_true", help="also print the paper's three claims")
    p.add_argument(
        "--hours",
        type=positive_float,
        default=None,
        help="a wall-clock target in hours: the workers each design needs, at the --pilot's measured episodes per "
        "hour per worker (default: none)",
    )
    p.set_defaults(func=cmd_plan)
