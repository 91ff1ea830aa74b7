"""``ivra compare RUN_A RUN_B``: two finished runs paired episode by episode, with ivra's paired statistics.

The runs may come from ivra (a journal), vla-eval (an aggregate JSON) or inspect-robots (an EvalLog); see
:mod:`ivra.integrations.results` for what identifies an episode in each. Only episodes present in both runs are
paired (those in one run only are counted and named). It prints the paired 2x2 table, the success rates with
Wilson intervals, the difference B - A with Tango's 95 % interval, McNemar's exact test
(:func:`ivra.eval.stats.paired_ab`), the anytime-valid sequential verdict over the pairs in identity order
(:mod:`ivra.eval.sequential`, as the A/B verbs decide) and the planner's statement of power
(:func:`ivra.eval.power.plan` with the measured discordance). It refuses in one line (exit 2) a missing file, a
file of no known format, and runs that share no episode; it warns where a tool cannot guarantee that paired
episodes were identical.
"""

from __future__ import annotations

import argparse
import json
import warnings

from ivra.cliargs import UsageError, open_unit_float


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a difference of rates in (0, 1), e.g. 0.05, got {text!r}"
        ) from None
    if not 0 < abs(v) < 1:
        raise argparse.ArgumentTypeError(f"expected a non-zero difference of rates in (-1, 1), got {text!r}")
    return v


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def compare(args: argparse.Namespace) -> dict:
    """The comparison as a dict (printed by :func:`cmd_compare`)."""
    from ivra.eval.power import plan
    from ivra.eval.sequential import decide, for_maximum
    from ivra.eval.stats import paired_ab, wilson
    from ivra.integrations.results import UnknownFormat, read_run

    runs = []
    for path, arm, default in ((args.run_a, args.arm_a, "baseline"), (args.run_b, args.arm_b, "ivra")):
        try:
            runs.append(read_run(path, arm=arm, default_arm=default, metric=args.metric))
        except UnknownFormat as exc:
            raise UsageError(str(exc)) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}: cannot read it ({exc})") from None
    a, b = runs
    if a.path == b.path and a.arm == b.arm:
        raise UsageError(
            f"RUN_A and RUN_B are the same arm {a.arm!r} of {a.path}: name two arms (--arm-a, --arm-b)"
        )
    for run in runs:
        for w in run.warnings:
            warnings.warn(w, stacklevel=2)
    shared = sorted(set(a.outcomes) & set(b.outcomes), key=lambda k: json.dumps(k, default=str))
    if not shared:
        raise UsageError(
            f"the runs share no episode: {a.label} has {len(a.outcomes)} ({a.identity}) and {b.label} has "
            f"{len(b.outcomes)} ({b.identity}), none with the same identity (other seeds, tasks or initial states?)"
        )
    ya = [a.outcomes[k] for k in shared]
    yb = [b.outcomes[k] for k in shared]
    ab = paired_ab(ya, yb)
    n = len(shared)
    cs = for_maximum(n).extend(zip(ya, yb))
    verdict = decide(cs, args.delta, n, arm_b=f"B ({b.arm})", arm_a=f"A ({a.arm})")
    effect = args.effect if args.effect is not None else (ab.b_only - ab.a_only) / n  # = ab.diff, exactly
    discordance = (ab.a_only + ab.b_only) / n
    if effect == 0:
        power = {
            "effect": 0.0,
            "unavailable": "no difference was measured: give --effect (e.g. 0.05) to size a design",
        }
    else:
        try:
            p = plan(
                ab.rate_a, effect, discordance=discordance or None,
                source=f"measured on these {n} pairs" if discordance else None,
            )  # fmt: skip
            power = {"effect": effect, **p.to_dict()}
        except ValueError as exc:
            power = {"effect": effect, "unavailable": str(exc)}
    return {
        "a": {
            "path": a.path,
            "format": a.format,
            "arm": a.arm,
            "episodes": len(a.outcomes),
            "errors": a.errors,
        },
        "b": {
            "path": b.path,
            "format": b.format,
            "arm": b.arm,
            "episodes": len(b.outcomes),
            "errors": b.errors,
        },
        "identity": a.identity if a.identity == b.identity else f"{a.identity} | {b.identity}",
        "only_a": len(set(a.outcomes) - set(b.outcomes)),
        "only_b": len(set(b.outcomes) - set(a.outcomes)),
        "paired": ab.as_dict(),
        "wilson_a": wilson(ab.k_a, n),
        "wilson_b": wilson(ab.k_b, n),
        "sequential": verdict.to_dict(),
        "power": power,
        "warnings": [w for r in runs for w in r.warnings],
    }


def render(res: dict, delta: float) -> str:
    a, b, ab = res["a"], res["b"], res["paired"]
    n = ab["n"]
    lines = [
        f"A: {a['path']} ({a['format']}, arm {a['arm']}): {a['episodes']} episodes"
        + (f", {a['errors']} ended in an error (not counted)" if a["errors"] else ""),
        f"B: {b['path']} ({b['format']}, arm {b['arm']}): {b['episodes']} episodes"
        + (f", {b['errors']} ended in an error (not counted)" if b["errors"] else ""),
        f"paired on {n} shared episodes (identity: {res['identity']}); only in A: {res['only_a']}, only in B: "
        f"{res['only_b']}",
        "",
        "| | B success | B failure |",
        "|---|---:|---:|",
        f"| A success | {ab['both']} | {ab['a_only']} |",
        f"| A failure | {ab['b_only']} | {ab['neither']} |",
        "",
        f"success A: {ab['k_a']}/{n} = {_pct(ab['rate_a'])} (Wilson 95 % [{_pct(res['wilson_a'][0])}, "
        f"{_pct(res['wilson_a'][1])}])",
        f"success B: {ab['k_b']}/{n} = {_pct(ab['rate_b'])} (Wilson 95 % [{_pct(res['wilson_b'][0])}, "
        f"{_pct(res['wilson_b'][1])}])",
        f"difference B - A: {100 * ab['diff']:+.1f} pp, 95 % interval [{100 * ab['diff_ci'][0]:+.1f}, "
        f"{100 * ab['diff_ci'][1]:+.1f}] pp (Tango, paired)",
        f"McNemar exact test: p = {ab['p_mcnemar']:.4g} ({ab['a_only']} pairs A only, {ab['b_only']} B only)",
    ]
    seq = res["sequential"]
    lines.append(
        f"sequential (anytime-valid 95 % confidence sequence, Waudby-Smith & Ramdas 2023, over the {n} pairs in "
        f"identity order, futility margin +-{100 * delta:.1f} pp): {seq['outcome']}: {seq['reason']}"
    )
    pw = res["power"]
    if "unavailable" in pw:
        lines.append(f"power: not stated for an effect of {100 * pw['effect']:+.1f} pp: {pw['unavailable']}")
    else:
        have = "has" if n >= pw["paired_pairs"] else "has only"
        lines.append(
            f"power: to detect {100 * pw['effect']:+.1f} pp from a baseline of {_pct(pw['baseline'])} at alpha "
            f"{pw['alpha']} with power {pw['power']}, a paired design needs {pw['paired_pairs']} pairs (discordance "
            f"{_pct(pw['discordance'])}, {pw['discordance_source']}), an unpaired one {pw['unpaired_per_arm']} "
            f"episodes per arm; this comparison {have} {n} pairs"
        )
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    res = compare(args)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(render(res, args.delta))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    if "compare" in subparsers.choices:
        return
    p = subparsers.add_parser(
        "compare",
        help="pair two finished runs (ivra, vla-eval, inspect-robots) episode by episode: McNemar, interval, "
        "sequential verdict, power",
        description=(__doc__ or "").split("\n\n")[0],
    )
    p.add_argument(
        "run_a", metavar="RUN_A", help="the reference run (A): a result file, or an ivra run folder"
    )
    p.add_argument(
        "run_b", metavar="RUN_B", help="the run compared with it (B); may be the same file as RUN_A"
    )
    p.add_argument("--arm-a", default=None, help="the arm of RUN_A when it holds several (default: baseline)")
    p.add_argument("--arm-b", default=None, help="the arm of RUN_B when it holds several (default: ivra)")
    p.add_argument(
        "--metric", default=None,
        help="the 0/1 score that is success (default: vla-eval's success, inspect-robots' success_at_end)",
    )  # fmt: skip
    p.add_argument(
        "--delta", type=open_unit_float, default=0.05,
        help="the sequential verdict's futility margin: no effect as large as this (default 0.05)",
    )  # fmt: skip
    p.add_argument(
        "--effect", type=_fraction, default=None,
        help="the difference the power statement sizes a design for (default: the measured one)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=cmd_compare)
