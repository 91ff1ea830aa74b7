"""Tabletop verbs: ``ivra demo`` (paired A/B of the shipped policy), ``ivra sweep`` (layer x lam on val),
``ivra viz`` (affinity overlays for one observation)."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

EXECUTOR_HELP = "inline (this process, default: best on a small CPU), local (worker processes) or ray"


def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--policy", default="low", help="shipped regime (low | full), a training run directory, or ws://HOST:PORT (`ivra serve`)")
    p.add_argument("--out", default=out, help="output folder (its journal makes a rerun resume)")
    p.add_argument("--executor", default="inline", choices=("inline", "local", "ray"), help=EXECUTOR_HELP)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--ray-address", default=None)
    p.add_argument("--chunk", type=int, default=50, help="episodes per work unit (batched together)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="paired baseline vs IVRA episodes of the shipped policy on the tabletop test splits"
    )
    _common(p, "runs/demo")
    p.add_argument("--episodes", type=int, default=200, help="episodes per split (README numbers: 1000)")
    p.add_argument("--splits", default=",".join(_test_splits()), help="comma-separated splits")
    p.add_argument(
        "--ivra",
        default=None,
        help="IVRA setting, e.g. 'layer=4,lam=0.3' (default: the recorded validation-sweep winner)",
    )
    p.set_defaults(func=demo)

    s = sub.add_parser("sweep", help="IVRA layer x lam grid on the validation split: heatmap and table")
    _common(s, "runs/sweep")
    s.add_argument("--episodes", type=int, default=500, help="validation episodes per grid cell")
    s.add_argument("--split", default="val")
    s.add_argument("--layers", default="0,1,2,3,4,5")
    s.add_argument("--lams", default="0.1,0.2,0.3,0.5")
    s.add_argument(
        "--write-default",
        action="store_true",
        help="record the winner as the shipped default IVRA setting (used by `ivra demo`)",
    )
    s.set_defaults(func=sweep)

    v = sub.add_parser(
        "viz", help="affinity overlays of one tabletop observation (the paper's qualitative figure)"
    )
    v.add_argument("--policy", default="low")
    v.add_argument("--split", default="placement")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--ivra", default=None)
    v.add_argument(
        "--queries", default=None, help="comma-separated patch indices (default: spread automatically)"
    )
    v.add_argument("--out", default="runs/viz/affinity.png")
    v.set_defaults(func=viz)


def _test_splits():
    from ivra.tabletop.ab import TEST_SPLITS

    return TEST_SPLITS


def _cfg(spec: str | None) -> tuple[dict, str]:
    from ivra.config import IVRAConfig
    from ivra.tabletop.ab import default_setting

    if spec:
        return IVRAConfig.parse(spec).to_dict(), "command line"
    setting, source = default_setting()
    return IVRAConfig(**setting).to_dict(), source


def _tag(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:8]


def _execute(args, units, journal, desc):
    from ivra.eval.executor import execute
    from ivra.tabletop.ab import TabletopABJob

    job = TabletopABJob(policy=args.policy, threads=1 if args.executor != "inline" else None)
    return execute(
        job,
        units,
        journal,
        executor=args.executor,
        workers=args.workers,
        desc=desc,
        ray_address=args.ray_address,
    ), job


def demo(args) -> int:
    from ivra.tabletop.ab import format_table, make_units, summarize

    t0 = time.time()
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    _check_splits(splits)
    cfg, source = _cfg(args.ivra)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = _tag(args.policy, cfg)
    units = make_units(splits, args.episodes, {"baseline": None, "ivra": cfg}, chunk=args.chunk)
    for u in units:
        u["key"] = f"{args.policy}@{tag}/{u['key']}"
    print(
        f"ivra demo: policy {args.policy}, IVRA {cfg['layer']=} {cfg['lam']=} ({source}); "
        f"{args.episodes} paired episodes x {len(splits)} splits; journal {out / 'journal.jsonl'}"
    )
    records, job = _execute(args, units, out / "journal.jsonl", "episodes chunks")
    summary = summarize(records, splits)
    table = format_table(summary)
    print(table)
    fig = None
    try:
        fig = make_figure(args.policy, splits[0], 0, cfg, out / "affinity.png", job=job)
    except Exception as exc:  # the table is the result; a figure failure must not hide it
        print(f"(figure not written: {exc})")
    result = {
        "policy": args.policy,
        "ivra": cfg,
        "ivra_source": source,
        "episodes_per_split": args.episodes,
        "splits": splits,
        "summary": summary,
        "figure": str(fig) if fig else None,
        "seconds": round(time.time() - t0, 1),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "table.md").write_text(table + "\n")
    print(
        f"wrote {out / 'results.json'}, {out / 'table.md'}"
        + (f", {fig}" if fig else "")
        + f" in {time.time() - t0:.0f}s"
    )
    return 0


def _check_splits(splits):
    from ivra.tabletop import SPLITS

    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise SystemExit(f"unknown split(s) {bad}; valid: {list(SPLITS)}")


def sweep(args) -> int:
    import numpy as np

    from ivra.config import IVRAConfig
    from ivra.tabletop.ab import SETTING_FILE, make_units, summarize
    from ivra.viz import heatmap

    t0 = time.time()
    _check_splits([args.split])
    layers = [int(x) for x in args.layers.split(",")]
    lams = [float(x) for x in args.lams.split(",")]
    arms = {"baseline": None}
    for layer in layers:
        for lam in lams:
            arms[f"L{layer}-lam{lam}"] = IVRAConfig(layer=layer, lam=lam).to_dict()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    units = make_units([args.split], args.episodes, arms, chunk=args.chunk)
    for u in units:
        u["key"] = f"{args.policy}@{_tag(args.policy)}/{u['key']}"
    records, _ = _execute(args, units, out / "journal.jsonl", "sweep chunks")
    grid = np.full((len(layers), len(lams)), np.nan)
    rows, base = [], None
    for i, layer in enumerate(layers):
        for j, lam in enumerate(lams):
            s = summarize(records, [args.split], treatment=f"L{layer}-lam{lam}")["rows"][0]
            base = s["baseline"]
            grid[i, j] = 100 * s["diff"]
            rows.append(
                {
                    "layer": layer,
                    "lam": lam,
                    "success": s["ivra"],
                    "diff": s["diff"],
                    "diff_ci": s["diff_ci"],
                    "p_mcnemar": s["p_mcnemar"],
                    "n": s["n"],
                }
            )
    best = max(rows, key=lambda r: (r["success"], -r["lam"]))
    png = heatmap(
        grid,
        layers,
        lams,
        out / "sweep.png",
        f"IVRA - baseline success (pp) on {args.split}, n={args.episodes}, baseline {100 * base:.1f} %",
        "LM layer L",
        "lam",
    )
    lines = ["| layer | lam | success % | diff (pp) [95% CI] | McNemar p |", "|---:|---:|---:|---|---:|"]
    lines += [
        f"| {r['layer']} | {r['lam']} | {100 * r['success']:.1f} | {100 * r['diff']:+.1f} "
        f"[{100 * r['diff_ci'][0]:+.1f}, {100 * r['diff_ci'][1]:+.1f}] | {r['p_mcnemar']:.3g} |"
        for r in rows
    ]
    table = f"baseline: {100 * base:.1f} % ({args.split}, n={args.episodes})\n\n" + "\n".join(lines)
    print(table)
    print(f"winner on {args.split}: layer={best['layer']} lam={best['lam']} ({100 * best['success']:.1f} %)")
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "baseline": base,
                "rows": rows,
                "best": best,
                "split": args.split,
                "episodes": args.episodes,
                "policy": args.policy,
            },
            indent=2,
        )
    )
    if args.write_default:
        SETTING_FILE.write_text(
            json.dumps(
                {
                    "ivra": {"layer": best["layer"], "lam": best["lam"]},
                    "source": f"ivra sweep winner on the {args.split} split ({args.episodes} episodes per cell, policy "
                    f"{args.policy})",
                },
                indent=2,
            )
            + "\n"
        )
        print(f"recorded the default IVRA setting in {SETTING_FILE}")
    print(f"wrote {png}, {out / 'table.md'} in {time.time() - t0:.0f}s")
    return 0


def make_figure(policy: str, split: str, seed: int, cfg: dict, path, job=None, queries=None):
    """Observation of (split, seed), both arms' first actions, and the affinity of a few query patches."""
    import ivra
    from ivra.config import IVRAConfig
    from ivra.minivla.policy import MiniVLAPolicy
    from ivra.tabletop.env import TabletopEnv
    from ivra.viz import figure

    pol = getattr(job, "_policy", None) or MiniVLAPolicy(policy)
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
    queries = [int(q) for q in args.queries.split(",")] if args.queries else None
    path = make_figure(args.policy, args.split, args.seed, cfg, args.out, queries=queries)
    print(f"wrote {path}")
    return 0
