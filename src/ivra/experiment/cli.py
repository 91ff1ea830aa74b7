"""Tabletop experiment verbs: ``ivra demo`` (paired A/B of the shipped policy on the test splits), ``ivra sweep``
(layer x lam [x affinity feature x mode x affinity layer] grid on the validation split), ``ivra viz`` (affinity
overlays of one observation).

Everything a user types is checked before the first episode runs: counts and lists by the parser, then a
pre-flight that loads the policy and attaches every IVRA setting of the run once (a layer the model does not
have, an unknown policy, a bad query index end here in one line with exit status 2).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path

from ivra.cliargs import (
    DESIGN_HELP,
    EXIT_FAILED,
    UsageError,
    check_executor,
    check_rounds,
    choice,
    default_design,
    design_choice,
    int_or_none,
    integer,
    ivra_setting,
    list_of,
    nonneg_int,
    open_unit_float,
    out_dir,
    out_file,
    positive_int,
    unit_float,
)

EXECUTOR_HELP = "inline (this process, default: best on a small CPU), local (worker processes) or ray"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _splits() -> tuple[str, ...]:
    from ivra.tabletop.tasks import SPLITS

    return SPLITS


def _split(text: str) -> str:
    return choice(_splits(), "split")(text)


def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument(
        "--policy",
        default="low",
        help="shipped regime (low = 12 %% of the demonstrations, the default; full = all of them), a training run "
        "directory, or ws://HOST:PORT (a policy served by `ivra serve`)",
    )
    p.add_argument(
        "--out", default=out, type=out_dir, help="output folder (its journal makes a rerun resume)"
    )
    p.add_argument("--executor", default="inline", choices=("inline", "local", "ray"), help=EXECUTOR_HELP)
    p.add_argument(
        "--workers", type=positive_int, default=1, help="worker processes or Ray actors (default 1)"
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="with --executor ray: connect to this cluster (default: start one)",
    )
    p.add_argument("--chunk", type=positive_int, default=50, help="episodes per work unit (batched together)")
    p.add_argument("--torch-threads", type=nonneg_int, default=None, metavar="N", help=_torch_threads_help())
    p.add_argument(
        "--rerun-errors",
        action="store_true",
        help="on resume, also rerun the units whose journaled result is an error",
    )


def _torch_threads_help() -> str:
    from ivra.eval.cli import TORCH_THREADS_HELP

    return TORCH_THREADS_HELP


def register(sub: argparse._SubParsersAction) -> None:
    from ivra.tabletop.tasks import TEST_SPLITS  # (not ivra.experiment.ab: no scipy for a --help)

    if "demo" in sub.choices:  # the main CLI may call register once per verb
        return
    p = sub.add_parser(
        "demo", help="paired baseline vs IVRA episodes of the shipped policy on the tabletop test splits"
    )
    _common(p, "runs/demo")
    p.add_argument(
        "--episodes",
        type=positive_int,
        default=200,
        help="episodes per split (default 200; the README's results use 1000)",
    )
    p.add_argument(
        "--splits",
        default=list(TEST_SPLITS),
        type=list_of(_split, "splits"),
        help=f"comma-separated splits (default: {','.join(TEST_SPLITS)})",
    )
    p.add_argument(
        "--ivra",
        default=None,
        type=ivra_setting,
        help="IVRA setting, e.g. 'layer=2,lam=0.3' (default: the recorded validation-sweep winner)",
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="run in rounds of --round and stop as soon as the --design decides (all splits pooled): an effect, "
        "or none as large as --delta; --episodes is then the maximum per split",
    )
    p.add_argument(
        "--design",
        type=design_choice,
        default=default_design(),
        help=DESIGN_HELP,
    )
    p.add_argument(
        "--round",
        type=positive_int,
        default=100,
        help="with --sequential: episodes per split and arm per round (default 100)",
    )
    p.add_argument(
        "--delta",
        type=open_unit_float,
        default=0.02,
        help="with --sequential: the smallest effect of interest, as a difference of rates (default 0.02 = 2 pp)",
    )
    p.set_defaults(func=demo)

    s = sub.add_parser(
        "sweep",
        help="IVRA grid on the validation split (layer x lam, optionally x affinity feature, mode and layer): "
        "heatmaps and table",
    )
    _common(s, "runs/sweep")
    s.add_argument("--episodes", type=positive_int, default=500, help="validation episodes per grid cell")
    s.add_argument("--split", default="val", type=_split, help="split to sweep on (default val)")
    s.add_argument(
        "--layers",
        default=None,
        type=list_of(integer, "integers"),
        help="language-model layers L to sweep, e.g. 0,1,2 (default: every layer of the policy)",
    )
    s.add_argument(
        "--lams",
        default=[0.1, 0.2, 0.3, 0.5],
        type=list_of(unit_float, "numbers in [0, 1]"),
        help="mixing weights lam to sweep (default 0.1,0.2,0.3,0.5)",
    )
    s.add_argument(
        "--features",
        default=["key"],
        type=list_of(choice(_affinity_features(), "affinity feature"), "affinity features"),
        help=f"affinity features to sweep ({' | '.join(_affinity_features())}; default key)",
    )
    s.add_argument(
        "--modes",
        default=["cosine"],
        type=list_of(choice(_affinity_modes(), "affinity mode"), "affinity modes"),
        help=f"affinity modes to sweep ({' | '.join(_affinity_modes())}; default cosine)",
    )
    s.add_argument(
        "--affinity-layers",
        default=[None],
        type=list_of(int_or_none, "integers or none"),
        help="vision layers whose feature is read, e.g. -1,-2 (default none = the adapter's default)",
    )
    s.add_argument(
        "--adaptive",
        action="store_true",
        help="successive elimination: rounds of --round episodes; a cell whose anytime-valid interval shows it "
        "worse than another's (error controlled across cells) stops, and the grid's budget (cells x --episodes) "
        "goes to the survivors",
    )
    s.add_argument(
        "--round",
        type=positive_int,
        default=100,
        help="with --adaptive: episodes per surviving cell and round (default 100)",
    )
    s.add_argument(
        "--design",
        type=design_choice,
        default=default_design(),
        help="with --adaptive: group (default: each cell against the baseline by an exact group-sequential test at "
        "the planned rounds up to --episodes, alpha 0.05 / cells; a cell stops when it is worse than the baseline or "
        "shows no gain as large as --delta) or anytime (successive elimination on anytime-valid intervals, the "
        "grid's budget going to the survivors)",
    )
    s.add_argument(
        "--delta",
        type=open_unit_float,
        default=0.02,
        help="with --adaptive --design group: the smallest gain of interest, a difference of rates (default 0.02)",
    )
    s.add_argument(
        "--write-default",
        action="store_true",
        help="record the winner (a cell above the baseline) as the default IVRA setting of `ivra demo` (--split val "
        "only). It is written to $IVRA_SETTING_FILE when set, else into the installed package "
        "(ivra/minivla/weights/ivra_setting.json; with scripts/setup.sh's editable install: src/ in this checkout)",
    )
    s.set_defaults(func=sweep)

    v = sub.add_parser(
        "viz", help="affinity overlays of one tabletop observation (the paper's qualitative figure)"
    )
    v.add_argument(
        "--policy",
        default="low",
        help="shipped regime (low = 12 %% of the demonstrations, the default; full = all of them) or a training run "
        "directory",
    )
    v.add_argument(
        "--split", default="placement", type=_split, help="split of the observation (default placement)"
    )
    v.add_argument("--seed", type=nonneg_int, default=0, help="episode seed of the observation (default 0)")
    v.add_argument("--ivra", default=None, type=ivra_setting, help="IVRA setting (default: as `ivra demo`)")
    v.add_argument(
        "--queries",
        default=None,
        type=list_of(nonneg_int, "patch indices"),
        help="comma-separated patch indices, 0 .. patches-1 (default: spread automatically)",
    )
    v.add_argument(
        "--out",
        default="runs/viz/affinity.png",
        type=out_file(FIGURE_SUFFIXES),
        help=f"figure file ({' | '.join(FIGURE_SUFFIXES)}; default runs/viz/affinity.png)",
    )
    v.set_defaults(func=viz)


def _affinity_features() -> tuple[str, ...]:
    from ivra.config import AFFINITY_FEATURES

    return AFFINITY_FEATURES


def _affinity_modes() -> tuple[str, ...]:
    from ivra.config import AFFINITY_MODES

    return tuple(AFFINITY_MODES)


def _cfg(setting: dict | None) -> tuple[dict, str]:
    from ivra.config import IVRAConfig
    from ivra.experiment.ab import default_setting

    if setting:
        return setting, "command line"
    recorded, source = default_setting()
    return IVRAConfig(**recorded).to_dict(), source


#: options that decide how a run computes, not what it computes: not part of a run folder's configuration (a resume
#: may change them); every other option is (:mod:`ivra.eval.runfolder`)
NOT_CONFIGURATION = (
    "out",
    "executor",
    "workers",
    "ray_address",
    "rerun_errors",
    "torch_threads",
    "write_default",
    "verb",
    "debug",
    "version",
)


def claim_out(args, **resolved) -> None:
    """Record this command's configuration in ``--out`` (``run.json``), or refuse it when the folder holds a run of
    another one. ``resolved``: options whose value the command resolved (``ivra``: the default setting it read)."""
    from ivra.eval import runfolder

    config = {k: v for k, v in vars(args).items() if k not in NOT_CONFIGURATION and not callable(v)}
    config.update(resolved)
    runfolder.claim(args.out, getattr(args, "verb", None) or "run", config)


def _tag(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:8]


def preflight(policy: str, arms: dict[str, dict | None], executor: str = "inline"):
    """Load the policy and attach (then detach) every arm's IVRA setting once: any mistake in them ends here,
    as a :class:`UsageError`, before an episode runs. Returns the loaded policy."""
    pol = load_policy(policy, executor)
    check_arms(pol, arms)
    return pol


def load_policy(policy: str, executor: str = "inline"):
    """The policy named on the command line, built by :func:`ivra.policies.registry.build_policy` (a shipped
    tabletop regime, a run directory, ``package.module:Class``, or a server that answers now); a mistake is a
    :class:`UsageError`."""
    from ivra.policies.registry import NAMES, build_policy, is_tabletop
    from ivra.policies.remote import ServerUnavailable, is_server_url

    check_executor(executor)
    served = is_server_url(policy)
    if not is_tabletop(policy) and (policy in NAMES or policy.startswith(("sim:", "lerobot:"))):
        raise UsageError(
            f"--policy {policy}: not a tabletop policy; this verb runs the tabletop: low | full | a training run "
            "directory | ws://HOST:PORT | package.module:Class (LIBERO policies run with `ivra eval libero`)"
        )
    try:  # served by `ivra serve`: reachable now (the server checks the settings it gets)
        pol = build_policy(policy, {"reconnect_s": 5} if served else {})
    except ServerUnavailable as exc:
        raise UsageError(f"--policy {policy}: {exc}") from None
    except (ValueError, FileNotFoundError, ImportError, AttributeError) as exc:
        raise UsageError(f"--policy {policy}: {exc}") from None
    dim = pol.metadata.get("action_dim") if served else None
    if dim is not None and int(dim) != 4:
        raise UsageError(
            f"--policy {policy}: the served policy ({pol.metadata.get('policy', '?')}) answers {dim}-D actions; "
            "the tabletop takes 4 (pick x, y, place x, y)"
        )
    return pol


def check_arms(pol, arms: dict[str, dict | None]) -> None:
    """Every arm's IVRA setting set once on the policy: the check of every verb (:mod:`ivra.policies.check`)."""
    from ivra.policies.check import check_arms as check

    check(pol, arms)


def warn_notes(policy: str, pol) -> dict:
    """What the policy is when it is not a trained one (:func:`ivra.policies.base.policy_notes`: its own, or its
    server's metadata when served): each a WARNING on stderr now; returned for results.json and the table."""
    from ivra.policies.base import note_warnings, policy_notes

    notes = policy_notes(pol)
    for line in note_warnings(policy, notes):
        print(line, file=sys.stderr)
    return notes


def notes_header(notes: dict) -> str:
    """The table's first lines for a policy with notes (random weights, a stand-in); empty for a trained one."""
    lines = []
    if notes.get("random_weights"):
        lines.append(
            f"RANDOM WEIGHTS: {notes['random_weights']}; the success rates say nothing about a trained policy"
        )
    if notes.get("stand_in"):
        lines.append(f"STAND-IN: {notes['stand_in']}; the success rates say nothing about a policy")
    return "".join(line + "\n\n" for line in lines)


def policy_layers(pol, policy: str) -> list[int]:
    """Every language-model layer of a policy in this process (the sweep's default grid)."""
    from ivra.adapters import detect

    model = getattr(pol, "model", None)
    if model is None:
        raise UsageError(f"--policy {policy}: a served policy's layers are not known here; pass --layers")
    return list(range(len(detect(model).lm_layers(model))))


def _execute(args, units, journal, desc, policy_obj=None):
    from ivra.eval.executor import execute
    from ivra.experiment.ab import TabletopABJob

    threads = getattr(args, "torch_threads", None)
    if threads is None:  # one per worker (one worker too); inline: torch's default
        threads = 1 if args.executor != "inline" else 0
    job = TabletopABJob(policy=args.policy, threads=threads or None)
    if args.executor == "inline":
        job._policy = policy_obj  # already loaded by the pre-flight
    return execute(
        job,
        units,
        journal,
        executor=args.executor,
        workers=args.workers,
        desc=desc,
        ray_address=args.ray_address,
        rerun_errors=args.rerun_errors,
    ), job


def _report_errors(records, journal) -> int:
    """Print the per-arm error summary to stderr; the exit status (1 if any unit ended in an error)."""
    from ivra.eval.executor import error_summary, format_errors

    summary = error_summary(records)
    if summary:
        print(format_errors(summary, journal), file=sys.stderr)
        return EXIT_FAILED
    return 0


def demo(args) -> int:
    from ivra.config import describe_setting
    from ivra.eval.executor import error_summary
    from ivra.experiment.ab import families, format_table, summarize

    t0 = time.time()
    splits = args.splits
    if args.sequential:
        check_rounds(
            args.design,
            -(-args.episodes // args.round),
            f"--episodes {args.episodes} with --round {args.round}",
        )
    cfg, source = _cfg(args.ivra)
    pol = preflight(args.policy, {"ivra": cfg}, args.executor)
    unused = {} if args.sequential else {"round": None, "delta": None}  # options a fixed run ignores
    claim_out(args, ivra=cfg, **unused)
    notes = warn_notes(args.policy, pol)
    out = Path(args.out)
    if args.sequential and (out / "results.json").exists():
        from ivra.eval.sequential import resume_conflict

        previous = json.loads((out / "results.json").read_text()).get("sequential")
        why = resume_conflict(previous, {"design": args.design, "round": args.round, "delta": args.delta})
        if why:
            raise UsageError(f"--out {out}: {why}")
    out.mkdir(parents=True, exist_ok=True)
    tag = _tag(args.policy, cfg)
    units = _demo_units(args, splits, cfg, tag, args.episodes)
    journal = out / "journal.jsonl"
    print(
        f"ivra demo: policy {args.policy}, IVRA {describe_setting(cfg)} ({source}); "
        f"{args.episodes} paired episodes x {len(splits)} split(s); journal {journal}"
    )
    if args.sequential:
        records, job, sequential = _sequential_rounds(args, splits, cfg, tag, journal, pol)
    else:
        records, job = _execute(args, units, journal, "episode chunks", pol)
        sequential = None
    summary = summarize(records, splits)
    by_family = summarize(records, families(records), by="task")
    table = notes_header(notes) + format_table(summary) + "\n\n" + power_line(summary)
    family_table = format_table(by_family)
    verdict = ""
    if sequential:
        verdict = sequential_lines(sequential, summary)
        table += "\n\n" + FIXED_NOTE + "\n\n" + verdict
    print(notes_header(notes) + format_table(summary) + "\n\n" + power_line(summary))
    print(f"\nper task family ({', '.join(splits)} pooled):\n{family_table}")
    fig = None
    try:
        fig = make_figure(args.policy, splits[0], 0, cfg, out / "affinity.png", job=job)
    except Exception as exc:  # noqa: BLE001 -- the table is the result; a figure failure must not hide it
        print(f"(figure not written: {exc})", file=sys.stderr)
    result = {
        "policy": args.policy,
        **notes,  # random_weights, stand_in: a sentence each, or None
        "ivra": cfg,
        "ivra_source": source,
        "episodes_per_split": args.episodes,
        "splits": splits,
        "summary": summary,
        "summary_by_family": by_family,
        "errors": error_summary(records),
        "figure": str(fig) if fig else None,
        "seconds": round(time.time() - t0, 1),
    }
    if sequential:
        result["sequential"] = sequential
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "table.md").write_text(table + "\n")
    (out / "table_family.md").write_text(family_table + "\n")
    print(
        f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'table_family.md'}"
        + (f", {fig}" if fig else "")
        + f" in {time.time() - t0:.0f}s"
    )
    status = _report_errors(records, journal)
    if verdict:  # the decision is the last thing printed
        print("\n" + FIXED_NOTE + "\n\n" + verdict)
    return status


FIXED_NOTE = (
    "The tables' 95 % intervals are fixed-design intervals: valid for a run whose size was fixed in advance, not "
    "after a sequential stop; the sequential decision below uses its own design's boundaries and the anytime-valid "
    "interval, which holds at every round and is wider."
)


def power_line(summary: dict) -> str:
    """The planner's statement of power for this A/B (pooled rows): the smallest difference it detects."""
    from ivra.eval.power import power_statement

    rows = summary.get("rows") or []
    row = next(
        (r for r in rows if r.get("split", r.get("task")) == "all"), rows[0] if len(rows) == 1 else None
    )
    if not row:
        return "power: no pairs finished by both arms"
    return power_statement(row["n"], row["baseline_only"] + row["ivra_only"])


def sequential_lines(sequential: dict, summary: dict) -> str:
    """The sequential verdict, both intervals labelled: the anytime-valid one and the (pooled) fixed-design one."""
    d = sequential["decision"]
    rows = summary.get("rows") or []
    row = next(
        (r for r in rows if r.get("split", r.get("task")) == "all"), rows[0] if len(rows) == 1 else None
    )
    lo, hi = d["interval"]
    text = (
        f"sequential A/B ({sequential.get('design', 'anytime')} design): **{d['outcome']}** after "
        f"{sequential['rounds']} round(s), {d['n']} pairs: {d['reason']}. Paired difference "
        f"{100 * d['estimate']:+.1f} pp; anytime-valid 95 % interval [{100 * lo:+.1f}, {100 * hi:+.1f}] pp"
    )
    if row:
        text += (
            f"; fixed-design 95 % interval [{100 * row['diff_ci'][0]:+.1f}, {100 * row['diff_ci'][1]:+.1f}] pp "
            "(narrower; not valid after a sequential stop)"
        )
    return (
        text + f". {sequential['episodes_spent']} episodes spent; the fixed design would spend "
        f"{sequential['fixed_design_episodes']}."
    )


def _demo_units(args, splits, cfg, tag, n_episodes, first_seed=0):
    from ivra.experiment.ab import make_units

    units = make_units(
        splits, n_episodes, {"baseline": None, "ivra": cfg}, chunk=args.chunk, first_seed=first_seed
    )
    for u in units:
        u["key"] = f"{args.policy}@{tag}/{u['key']}"
    return units


def _sequential_rounds(args, splits, cfg, tag, journal, pol):
    """Rounds of ``--round`` episodes per split and arm (the same units, hence the same journal keys, as a fixed
    run) until the stop rule decides; a rerun replays the journaled rounds and reaches the same decision."""
    from ivra.eval.sequential import make_rounds
    from ivra.experiment.ab import paired_outcomes

    bounds = list(range(args.round, args.episodes, args.round)) + [args.episodes]
    seq = make_rounds(args.design, args.episodes * len(splits), args.delta, len(bounds))
    records, job = [], None
    start = 0
    for r, bound in enumerate(bounds, 1):
        units = _demo_units(args, splits, cfg, tag, bound - start, first_seed=start)
        got, job = _execute(args, units, journal, f"round {r}/{len(bounds)}", pol)
        records += got
        seq.add(paired_outcomes(records, splits, below_seed=bound), last=bound == args.episodes)
        print(seq.line(), file=sys.stderr)
        start = bound
        if seq.decision.stop:
            break
    spent = sum(len(rec["result"]["episodes"]) for rec in records if rec.get("status") == "ok")  # both arms
    fixed = 2 * args.episodes * len(splits)
    sequential = seq.record(
        f"{args.round} episodes per split and arm (all splits pooled)",
        f"{args.episodes} episodes per split",
        spent,
        fixed,
    )
    sequential["settings"] = {"design": args.design, "round": args.round, "delta": args.delta}
    return records, job, sequential


def _cell_name(layer, lam, feature, mode, affinity_layer) -> str:
    """Arm name of one grid cell; the affinity axes appear only where they differ from the default, so the
    journals of layer x lam sweeps keep their names."""
    from ivra.config import IVRAConfig

    d = IVRAConfig()
    name = f"L{layer}-lam{lam}"
    if feature != d.affinity_feature:
        name += f"-{feature}"
    if mode != d.affinity_mode:
        name += f"-{mode}"
    if affinity_layer != d.affinity_layer:
        name += f"-aff{affinity_layer}"
    return name


def sweep(args) -> int:
    import numpy as np

    from ivra.config import IVRAConfig, describe_setting
    from ivra.eval.executor import error_summary
    from ivra.experiment.ab import TUNING_SPLITS, make_units, setting_file, summarize
    from ivra.viz import heatmap

    t0 = time.time()
    if args.adaptive:
        check_rounds(
            args.design,
            -(-args.episodes // args.round),
            f"--episodes {args.episodes} with --round {args.round}",
        )
    if args.write_default and args.split != "val":
        raise UsageError(
            f"--write-default records the setting `ivra demo` reports on the test splits, so it must be tuned on "
            f"--split val, not {args.split!r}"
        )
    if args.split not in TUNING_SPLITS:
        print(
            f"warning: sweeping on the {args.split!r} split; tune on val, report test splits with `ivra demo`",
            file=sys.stderr,
        )
    pol = load_policy(args.policy, args.executor)
    layers, lams = args.layers or policy_layers(pol, args.policy), args.lams
    combos = list(itertools.product(args.features, args.modes, args.affinity_layers))
    arms: dict[str, dict | None] = {"baseline": None}
    cells = []
    for feature, mode, aff in combos:
        for layer in layers:
            for lam in lams:
                try:
                    cfg = IVRAConfig(
                        layer=layer, lam=lam, affinity_feature=feature, affinity_mode=mode, affinity_layer=aff
                    ).to_dict()
                except ValueError as exc:
                    raise UsageError(str(exc)) from None
                name = _cell_name(layer, lam, feature, mode, aff)
                arms[name] = cfg
                cells.append((name, cfg))
    check_arms(pol, arms)
    claim_out(args, layers=layers, **({} if args.adaptive else {"round": None}))
    notes = warn_notes(args.policy, pol)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    units = make_units([args.split], args.episodes, arms, chunk=args.chunk)
    for u in units:
        u["key"] = f"{args.policy}@{_tag(args.policy)}/{u['key']}"
    journal = out / "journal.jsonl"
    print(
        f"ivra sweep: policy {args.policy}, {len(cells)} cells ({len(layers)} layers x {len(lams)} lams x "
        f"{len(combos)} affinity choice(s)) + baseline, {args.episodes} {args.split} episodes each; journal {journal}"
    )
    if args.adaptive and (out / "results.json").exists():
        from ivra.eval.sequential import resume_conflict

        settings = {"design": args.design, "round": args.round, "delta": args.delta}
        why = resume_conflict(json.loads((out / "results.json").read_text()).get("adaptive"), settings)
        if why:
            raise UsageError(f"--out {out}: {why}")
    if args.adaptive and args.design == "group":
        records, adaptive = _group_rounds(args, cells, pol, journal)
        adaptive["settings"] = {"design": "group", "round": args.round, "delta": args.delta}
    elif args.adaptive:
        records, adaptive = _adaptive_rounds(args, cells, pol, journal)
        adaptive["settings"] = {"design": "anytime", "round": args.round}
    else:
        records, _ = _execute(args, units, journal, "sweep chunks", pol)
        adaptive = None
    rows, base = [], None
    for name, cfg in cells:
        s = summarize(records, [args.split], treatment=name)["rows"]
        if not s:  # every unit of this cell (or of the baseline) errored: reported below, not ranked
            continue
        s = s[0]
        base = s["baseline"]
        rows.append(
            {
                "layer": cfg["layer"],
                "lam": cfg["lam"],
                "affinity_feature": cfg["affinity_feature"],
                "affinity_mode": cfg["affinity_mode"],
                "affinity_layer": cfg["affinity_layer"],
                "arm": name,
                "success": s["ivra"],
                "diff": s["diff"],
                "diff_ci": s["diff_ci"],
                "p_mcnemar": s["p_mcnemar"],
                "n": s["n"],
            }
        )
    status = _report_errors(records, journal)
    if not rows:
        print("error: no grid cell has episodes finished by both arms; nothing to rank", file=sys.stderr)
        return EXIT_FAILED
    if adaptive:  # the baseline over all its episodes; only survivors can win
        from ivra.experiment.ab import episodes_by_arm

        base_eps = episodes_by_arm(records).get("baseline", {})
        base = sum(e["success"] for e in base_eps.values()) / max(1, len(base_eps))
        ranked = [r for r in rows if r["arm"] in adaptive["survivors"]] or rows
    else:
        ranked = rows
    best = max(ranked, key=lambda r: (r["success"], -r["lam"]))
    winner = best if best["success"] > base else None  # a cell no better than the baseline wins nothing
    pngs = []
    extra_axes = len(combos) > 1 or combos[0] != ("key", "cosine", None)
    for feature, mode, aff in combos:
        grid = np.full((len(layers), len(lams)), np.nan)
        for r in rows:
            if (r["affinity_feature"], r["affinity_mode"], r["affinity_layer"]) == (feature, mode, aff):
                grid[layers.index(r["layer"]), lams.index(r["lam"])] = 100 * r["diff"]
        combo = f"feature={feature}, mode={mode}, affinity_layer={'default' if aff is None else aff}"
        fname = (
            f"sweep_{feature}_{mode}_aff{'default' if aff is None else aff}.png"
            if extra_axes
            else "sweep.png"
        )
        pngs.append(
            heatmap(
                grid,
                layers,
                lams,
                out / fname,
                f"IVRA - baseline success (pp) on {args.split}, n={args.episodes}, baseline {100 * base:.1f} %"
                + (f"\n{combo}" if extra_axes else ""),
                "LM layer L",
                "lam",
            )
        )
    lines = [
        "| layer | lam | feature | mode | affinity layer | n | success % | diff (pp) [95% CI] | McNemar p |"
        + (" out in round |" if adaptive else ""),
        "|---:|---:|---|---|---:|---:|---:|---|---:|" + ("---:|" if adaptive else ""),
    ]
    out_in = (adaptive or {}).get("eliminated_in_round", {})
    lines += [
        f"| {r['layer']} | {r['lam']} | {r['affinity_feature']} | {r['affinity_mode']} | "
        f"{'default' if r['affinity_layer'] is None else r['affinity_layer']} | {r['n']} | {100 * r['success']:.1f} | "
        f"{100 * r['diff']:+.1f} [{100 * r['diff_ci'][0]:+.1f}, {100 * r['diff_ci'][1]:+.1f}] | "
        f"{r['p_mcnemar']:.3g} |" + (f" {out_in.get(r['arm'], '-')} |" if adaptive else "")
        for r in rows
    ]
    n_base = adaptive["baseline_episodes"] if adaptive else args.episodes
    table = (
        notes_header(notes)
        + f"baseline: {100 * base:.1f} % ({args.split}, n={n_base})\n\n"
        + "\n".join(lines)
    )
    if adaptive:
        table += (
            f"\n\nadaptive ({adaptive.get('design', 'anytime')} design): {adaptive['rule']}; {adaptive['rounds']} round(s), {adaptive['cell_episodes_spent']} cell "
            f"episodes spent of the grid's {adaptive['grid_cell_episodes']}; survivors: {', '.join(adaptive['survivors'])}"
        )
    best_cfg = {k: best[k] for k in ("layer", "lam", "affinity_feature", "affinity_mode", "affinity_layer")}
    best_text = describe_setting(IVRAConfig(**best_cfg).to_dict())
    print(table)
    if winner:
        print(
            f"winner on {args.split}: {best_text} ({100 * best['success']:.1f} %, {100 * best['diff']:+.1f} pp)"
        )
    else:
        print(
            f"no winner on {args.split}: no cell is above the baseline ({100 * base:.1f} %); the best cell, "
            f"{best_text}, has {100 * best['success']:.1f} %"
        )
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "baseline": base,
                "rows": rows,
                "best": best,
                "winner": winner,
                "split": args.split,
                "episodes": args.episodes,
                "policy": args.policy,
                **notes,  # random_weights, stand_in: a sentence each, or None
                "adaptive": adaptive,
                "errors": error_summary(records),
            },
            indent=2,
        )
    )
    if args.write_default:
        if status:
            print("not recording a default: some units ended in an error", file=sys.stderr)
        elif not winner:
            print("not recording a default: no cell is above the baseline", file=sys.stderr)
        elif notes["random_weights"] or notes["stand_in"]:
            print(
                "not recording a default: the policy "
                + ("runs random weights" if notes["random_weights"] else "is a stand-in"),
                file=sys.stderr,
            )
        else:
            defaults = IVRAConfig().to_dict()
            setting = {k: v for k, v in best_cfg.items() if k in ("layer", "lam") or v != defaults[k]}
            path = setting_file()
            path.write_text(
                json.dumps(
                    {
                        "ivra": setting,
                        "source": f"ivra sweep winner on the {args.split} split ({args.episodes} episodes per "
                        f"cell, policy {Path(args.policy).name})",
                    },
                    indent=2,
                )
                + "\n"
            )
            print(f"recorded the default IVRA setting ({best_text}) in {path}")
    print(f"wrote {', '.join(str(p) for p in pngs)}, {out / 'table.md'} in {time.time() - t0:.0f}s")
    return status


def _adaptive_rounds(args, cells, pol, journal):
    """Successive elimination: rounds of ``--round`` episodes for the baseline and every surviving cell (the same
    seeds); after each, every cell's anytime-valid interval for (cell - baseline) at alpha 0.05 / cells (all
    simultaneously valid, Bonferroni); a cell whose upper end is below some cell's lower end is worse than that cell
    and stops. The grid's budget (cells x --episodes) goes to the survivors, until one is left or it is spent."""
    from ivra.eval.sequential import PairedCS
    from ivra.experiment.ab import make_units, paired_outcomes

    alpha = 0.05 / len(cells)
    cs = {name: PairedCS(alpha) for name, _ in cells}
    alive = [name for name, _ in cells]
    eliminated: dict[str, int] = {}
    budget, spent, start, r, records = len(cells) * args.episodes, 0, 0, 0, []
    while len(alive) > 1 and spent < budget:
        r += 1
        n = min(args.round, (budget - spent) // len(alive))
        if n == 0:
            break
        arms = {"baseline": None, **{name: cfg for name, cfg in cells if name in alive}}
        units = make_units([args.split], n, arms, chunk=args.chunk, first_seed=start)
        for u in units:
            u["key"] = f"{args.policy}@{_tag(args.policy)}/{u['key']}"
        got, _ = _execute(args, units, journal, f"round {r}: {len(alive)} cells", pol)
        records += got
        for name in alive:
            pairs = paired_outcomes(records, [args.split], treatment=name)
            cs[name].extend(pairs[cs[name].n :])
        spent += n * len(alive)
        start += n
        best = max(alive, key=lambda a: cs[a].lower)
        out = [a for a in alive if cs[a].upper < cs[best].lower]
        for a in out:
            eliminated[a] = r
        alive = [a for a in alive if a not in out]
        print(
            f"round {r}: {start} episodes per surviving cell; {len(out)} cell(s) out (worse than {best}), "
            f"{len(alive)} left",
            file=sys.stderr,
        )
    return records, {
        "rule": f"successive elimination on anytime-valid 95 % intervals (alpha 0.05 / {len(cells)} per cell) for "
        f"(cell - baseline), rounds of {args.round} episodes; budget {budget} cell episodes (the grid's)",
        "rounds": r,
        "cell_episodes_spent": spent,
        "baseline_episodes": start,
        "grid_cell_episodes": budget,
        "survivors": alive,
        "eliminated_in_round": eliminated,
        "intervals": {name: [cs[name].lower, cs[name].upper] for name, _ in cells},
    }


def _group_rounds(args, cells, pol, journal):
    """Each cell against the baseline by the exact group-sequential test (:mod:`ivra.eval.groupseq`) at alpha
    0.05 / cells (Bonferroni), looks planned at every ``--round`` up to ``--episodes`` per cell: a cell stops when
    it is worse than the baseline or shows no gain as large as ``--delta`` (out), or a gain (decided, kept). The
    looks are fixed before the run and a cell's maximum is ``--episodes``, so the budget saved is not reassigned."""
    from ivra.eval.groupseq import GroupSequential
    from ivra.eval.sequential import PairedCS
    from ivra.experiment.ab import make_units, paired_outcomes

    alpha = 0.05 / len(cells)
    bounds = list(range(args.round, args.episodes, args.round)) + [args.episodes]
    tests = {name: GroupSequential(args.episodes, args.delta, alpha) for name, _ in cells}
    cs = {name: PairedCS(alpha) for name, _ in cells}
    running = [name for name, _ in cells]
    eliminated: dict[str, int] = {}
    decided: dict[str, str] = {}
    spent, start, r, records = 0, 0, 0, []
    for r, bound in enumerate(bounds, 1):
        arms = {"baseline": None, **{name: cfg for name, cfg in cells if name in running}}
        units = make_units([args.split], bound - start, arms, chunk=args.chunk, first_seed=start)
        for u in units:
            u["key"] = f"{args.policy}@{_tag(args.policy)}/{u['key']}"
        got, _ = _execute(args, units, journal, f"round {r}/{len(bounds)}: {len(running)} cells", pol)
        records += got
        spent += (bound - start) * len(running)
        for name in running:
            pairs = paired_outcomes(records, [args.split], treatment=name)
            cs[name].extend(pairs[cs[name].n :])
            c = cs[name]
            lk = tests[name].look(c.n, c.discordant, c.b_only, last=bound == args.episodes)
            if lk.outcome != "continue":
                decided[name] = lk.outcome
                if lk.outcome in ("worse", "futility"):
                    eliminated[name] = r
        start = bound
        running = [n for n in running if n not in decided]
        print(
            f"round {r}/{len(bounds)}: {start} episodes per running cell; {len(eliminated)} cell(s) out (worse than "
            f"the baseline or no gain as large as {100 * args.delta:.1f} pp), {len(running)} running",
            file=sys.stderr,
        )
        if not running:
            break
    survivors = [name for name, _ in cells if name not in eliminated]
    return records, {
        "design": "group",
        "rule": f"each cell against the baseline: exact group-sequential test (alpha 0.05 / {len(cells)} per cell, "
        f"Jennison & Turnbull ch. 7/12) at {len(bounds)} planned looks of {args.round} episodes, out when worse or "
        f"with no gain as large as {100 * args.delta:.1f} pp (non-binding futility)",
        "rounds": r,
        "planned_rounds": len(bounds),
        "cell_episodes_spent": spent,
        "baseline_episodes": start,
        "grid_cell_episodes": len(cells) * args.episodes,
        "survivors": survivors,
        "eliminated_in_round": eliminated,
        "decisions": decided,
        "looks": {name: [vars(lk) for lk in tests[name].looks] for name, _ in cells},
        "intervals": {name: [cs[name].lower, cs[name].upper] for name, _ in cells},
    }


def make_figure(policy: str, split: str, seed: int, cfg: dict, path, job=None, queries=None, pol=None):
    """Observation of (split, seed), both arms' first actions, and the affinity of a few query patches."""
    import ivra
    from ivra.config import IVRAConfig
    from ivra.minivla.policy import MiniVLAPolicy
    from ivra.tabletop.env import TabletopEnv
    from ivra.viz import figure

    if policy.startswith(("ws://", "wss://")):
        raise RuntimeError(
            "the affinity figure needs the policy in this process (it is served over the network)"
        )
    pol = pol or getattr(job, "_policy", None) or MiniVLAPolicy(policy)
    env = TabletopEnv(resolution=pol.spec.image_size, split=split)
    obs, _ = env.reset(seed=seed)
    base = pol.act([obs], [obs["instruction"]])[0]
    with ivra.attach(pol.model, IVRAConfig(**cfg)) as h:
        treated = pol.act([obs], [obs["instruction"]])[0]
    A = h.last_affinity[0].cpu().numpy()
    return figure(
        obs["image"],
        A,
        path,
        queries=queries,
        actions={"baseline": base, "ivra": treated},
        title=f"{split} seed {seed}: {obs['instruction']}",
    )


def viz(args) -> int:
    cfg, _ = _cfg(args.ivra)
    if args.policy.startswith(("ws://", "wss://")):
        raise UsageError(
            f"--policy {args.policy}: ivra viz needs the policy in this process (low | a run dir)"
        )
    pol = preflight(args.policy, {"ivra": cfg})
    n_patches = (pol.spec.image_size // pol.spec.patch_size) ** 2
    bad = [q for q in args.queries or () if not 0 <= q < n_patches]
    if bad:
        raise UsageError(
            f"--queries {','.join(map(str, args.queries))}: patch index {bad[0]} out of range; this policy "
            f"has {n_patches} patches, expected 0..{n_patches - 1}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    path = make_figure(args.policy, args.split, args.seed, cfg, args.out, queries=args.queries, pol=pol)
    print(f"wrote {path}")
    return 0
