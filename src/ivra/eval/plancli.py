"""``ivra plan``: how many episodes an A/B needs (paired and unpaired), from assumed rates or a pilot run."""

from __future__ import annotations

import argparse

from ivra.cliargs import UsageError, open_unit_float


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
    from ivra.eval.power import PAPER_CLAIMS, plan, read_pilot

    if args.pilot and args.discordance is not None:
        raise UsageError("give --pilot (a run to measure the discordance from) or --discordance, not both")
    discordance, source, baseline = args.discordance, None, args.baseline
    if args.pilot:
        try:
            pilot = read_pilot(args.pilot)
        except ValueError as exc:
            raise UsageError(f"--pilot {args.pilot}: {exc}") from None
        discordance, source = pilot.discordance, f"pilot {pilot.source}, {pilot.n} pairs"
        baseline = baseline or pilot.baseline
        print(
            f"pilot: {pilot.n} pairs, baseline {100 * pilot.baseline:.1f} %, discordant {100 * discordance:.1f} % "
            f"(baseline only {pilot.baseline_only}, IVRA only {pilot.ivra_only})"
        )
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
        "else that of independent arms (no saving). `ivra demo --sequential` (and the other A/B verbs) stop as soon "
        "as an anytime-valid interval decides."
    )
    return 0


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
    p.set_defaults(func=cmd_plan)
