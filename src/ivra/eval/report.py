"""Reports from journal records: per-task k/n with Wilson intervals, per-suite totals, the paired A/B table
(difference with Newcombe CI, exact McNemar p), a bar plot, A/B videos, one Markdown file and one HTML page.

Works on the final records of :func:`ivra.eval.executor.execute` whose ``result`` has at least ``arm`` and
``success`` (and, for grouping, ``suite``, ``task_id``, ``task``). Units whose final status is ``error`` are
*not* counted as failures: they are listed separately and excluded from k/n (and from the pairs).
Two records form an A/B pair when their units are equal except for ``key`` and ``arm``.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ivra.config import describe_setting
from ivra.eval.power import power_statement
from ivra.eval.stats import paired_ab, wilson

BASELINE_ARM = "baseline"


def _pair_key(unit: dict) -> tuple:
    return tuple(
        sorted((k, json.dumps(v, sort_keys=True)) for k, v in unit.items() if k not in ("key", "arm"))
    )


def _arm(rec: dict) -> str:
    return rec["unit"].get("arm") or (rec.get("result") or {}).get("arm") or "default"


def _arms(records: list[dict]) -> list[str]:
    arms = list(dict.fromkeys(_arm(r) for r in records))
    return sorted(arms, key=lambda a: (a != BASELINE_ARM, a))


def _rate(k: int, n: int) -> dict:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else math.nan, "ci": [lo, hi]}


def summarize(records: list[dict]) -> dict:
    """Numbers behind the report (JSON-able)."""
    ok = [r for r in records if r.get("status") == "ok"]
    errors = [r for r in records if r.get("status") != "ok"]
    arms = _arms(records)
    tasks: dict[tuple, dict] = defaultdict(lambda: {"k": 0, "n": 0})
    suites: dict[tuple, dict] = defaultdict(lambda: {"k": 0, "n": 0})
    task_names: dict[tuple, str] = {}
    for r in ok:
        res = r["result"]
        arm = _arm(r)
        suite = res.get("suite", "all")
        tid = res.get("task_id", 0)
        task_names[(suite, tid)] = res.get("task", str(tid))
        for table, key in ((tasks, (suite, tid, arm)), (suites, (suite, arm))):
            table[key]["n"] += 1
            table[key]["k"] += int(bool(res["success"]))
    out: dict[str, Any] = {
        "arms": arms,
        "n_records": len(records),
        "n_errors": len(errors),
        "errors": [{"key": r["key"], "error": r.get("error"), "attempt": r.get("attempt")} for r in errors],
        "tasks": [
            {"suite": s, "task_id": t, "task": task_names[(s, t)], "arm": a, **_rate(v["k"], v["n"])}
            for (s, t, a), v in sorted(
                tasks.items(), key=lambda kv: (kv[0][0], kv[0][1], arms.index(kv[0][2]))
            )
        ],
        "suites": [
            {"suite": s, "arm": a, **_rate(v["k"], v["n"])}
            for (s, a), v in sorted(suites.items(), key=lambda kv: (kv[0][0], arms.index(kv[0][1])))
        ],
        "paired": [],
    }
    # paired comparisons of every other arm against the baseline (or the first arm)
    if len(arms) >= 2:
        ref = arms[0]
        by_arm: dict[str, dict[tuple, dict]] = defaultdict(dict)
        for r in ok:
            by_arm[_arm(r)][_pair_key(r["unit"])] = r["result"]
        for arm in arms[1:]:
            common = sorted(set(by_arm[ref]) & set(by_arm[arm]))
            groups: dict[str, list[tuple]] = defaultdict(list)
            for pk in common:
                groups[by_arm[ref][pk].get("suite", "all")].append(pk)
            for suite, pks in sorted(groups.items()):
                ab = paired_ab(
                    [by_arm[ref][p]["success"] for p in pks], [by_arm[arm][p]["success"] for p in pks]
                )
                out["paired"].append({"suite": suite, "a": ref, "b": arm, **ab.as_dict()})
    out["robustness"] = robustness(out["paired"])
    return out


def robustness(paired: list[dict]) -> list[dict]:
    """One row per LIBERO-PRO perturbation family beside its unperturbed suite (from the paired rows), when the
    records hold a base suite and at least one of its perturbations; else []."""
    from ivra.eval.libero import protocol

    suites = {p["suite"] for p in paired}
    if not any(s in protocol.PRO_SUITES for s in suites):
        return []
    rows = []
    for p in paired:
        if p["suite"] not in protocol.SUITES:
            continue
        fam = protocol.perturbation(p["suite"])
        rows.append(
            {
                "perturbation": fam or "none",
                "suite": p["suite"],
                "base_suite": protocol.base_suite(p["suite"]),
                "a": p["a"],
                "b": p["b"],
                "n": p["n"],
                "rate_a": p["k_a"] / p["n"] if p["n"] else math.nan,
                "rate_b": p["k_b"] / p["n"] if p["n"] else math.nan,
                "diff": p["diff"],
                "diff_ci": p["diff_ci"],
                "p_mcnemar": p["p_mcnemar"],
            }
        )
    order = ["none", *protocol.PERTURBATIONS]
    return sorted(rows, key=lambda r: (r["base_suite"], order.index(r["perturbation"]), r["b"]))


def _fmt_rate(row: dict) -> str:
    if not row["n"]:
        return "-"
    lo, hi = row["ci"]
    return f"{row['k']}/{row['n']} = {100 * row['rate']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def plot_success(summary: dict, path: str | os.PathLike) -> Path:
    """Grouped bars: success rate per task and arm, Wilson 95 % error bars; suite totals at the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = summary["arms"]
    labels = list(dict.fromkeys((t["suite"], t["task_id"]) for t in summary["tasks"]))
    cols = [f"{s.replace('libero_', '')}\nt{t}" for s, t in labels]
    suites = list(dict.fromkeys(s["suite"] for s in summary["suites"]))
    cols += [f"{s.replace('libero_', '')}\nall" for s in suites]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(cols) * max(1, len(arms)) ** 0.5 + 2), 3.6))
    width = 0.8 / max(1, len(arms))
    for j, arm in enumerate(arms):
        rows = {(t["suite"], t["task_id"]): t for t in summary["tasks"] if t["arm"] == arm}
        rows.update({(s["suite"], "all"): s for s in summary["suites"] if s["arm"] == arm})
        keys = labels + [(s, "all") for s in suites]
        rates, err_lo, err_hi = [], [], []
        for k in keys:
            r = rows.get(k)
            if r is None or not r["n"]:
                rates.append(0.0)
                err_lo.append(0.0)
                err_hi.append(0.0)
            else:
                rates.append(r["rate"])
                err_lo.append(r["rate"] - r["ci"][0])
                err_hi.append(r["ci"][1] - r["rate"])
        xs = [i + (j - (len(arms) - 1) / 2) * width for i in range(len(keys))]
        ax.bar(xs, rates, width, yerr=[err_lo, err_hi], capsize=2, label=arm)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (Wilson 95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_ab_videos(
    records: list[dict], episode_dir: str | os.PathLike, out_dir: str | os.PathLike, k: int
) -> list[dict]:
    """Compose up to ``k`` side-by-side videos (all arms of one unit), failures first: pairs where the arms
    disagree, then pairs where every arm failed, then the rest. Needs the per-episode videos."""
    from ivra.eval.video import side_by_side

    if k <= 0:
        return []
    episode_dir, out_dir = Path(episode_dir), Path(out_dir)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("status") == "ok" and (r.get("result") or {}).get("video"):
            groups[_pair_key(r["unit"])].append(r)
    arms_order = _arms(records)

    def priority(recs: list[dict]) -> tuple:
        succ = [bool(r["result"]["success"]) for r in recs]
        disagree = len(set(succ)) > 1
        return (0 if disagree else 1 if not any(succ) else 2, recs[0]["key"])

    chosen = sorted(
        (sorted(g, key=lambda r: arms_order.index(_arm(r))) for g in groups.values()),
        key=priority,
    )[:k]
    out = []
    for recs in chosen:
        paths = [episode_dir / r["result"]["video"] for r in recs]
        labels = [
            f"{r['unit'].get('arm', '')}: {'success' if r['result']['success'] else 'fail'}" for r in recs
        ]
        name = recs[0]["result"]["video"].rsplit(".", 1)[0]
        arm = recs[0]["unit"].get("arm", "")
        if arm and name.endswith(arm):
            name = name[: -len(arm)].rstrip("_")
        written = side_by_side(out_dir / f"ab__{name}.mp4", paths, labels)
        out.append({"path": str(written), "keys": [r["key"] for r in recs], "labels": labels})
    return out


def render_markdown(
    summary: dict, manifest: dict | None, plot: str | None, videos: list[dict], base: Path
) -> str:
    lines = ["# Evaluation report", ""]
    if manifest:
        cfg = manifest.get("config", {})
        lines += [
            f"- benchmark: **{manifest.get('benchmark', '?')}**, suite `{cfg.get('suite', '?')}`, policy `{cfg.get('policy', '?')}`"
            + (
                f" (served: `{manifest['policy_server'].get('policy')}`)"
                if isinstance(manifest.get("policy_server"), dict)
                else ""
            ),
            f"- arms: {', '.join(f'`{a}`' + (f' (IVRA {describe_setting(v)})' if v else '') for a, v in (cfg.get('arms') or {}).items())}",
            f"- renderer: `{manifest.get('renderer')}`, executor `{manifest.get('executor')}` x{manifest.get('workers')}, git `{manifest.get('git_revision')}`",
            f"- created: {manifest.get('created')}",
        ]
        if manifest.get("preset"):
            lines.append(f"- protocol: {manifest['preset']['name']} ({manifest['preset'].get('source', '')})")
        if len(manifest.get("suites") or []) > 1:
            lines.append(f"- suites: {', '.join(f'`{s}`' for s in manifest['suites'])}")
        lines += [
            "",
            "## Protocol deviations",
            "",
        ]
        devs = manifest.get("deviations") or []
        lines += [f"- {d}" for d in devs] if devs else ["- none (community protocol)"]
        lines.append("")
    lines += [
        "## Success per task",
        "",
        "k/n = rate [Wilson 95 % CI]; units that ended in an error are excluded and listed below.",
        "",
    ]
    arms = summary["arms"]
    lines.append("| suite | task | " + " | ".join(arms) + " |")
    lines.append("|---|---|" + "---|" * len(arms))
    rows: dict[tuple, dict] = defaultdict(dict)
    names = {}
    for t in summary["tasks"]:
        rows[(t["suite"], t["task_id"])][t["arm"]] = t
        names[(t["suite"], t["task_id"])] = t["task"]
    for (s, tid), per_arm in rows.items():
        cells = [_fmt_rate(per_arm[a]) if a in per_arm else "-" for a in arms]
        lines.append(f"| {s} | {tid}: {names[(s, tid)]} | " + " | ".join(cells) + " |")
    srows: dict[str, dict] = defaultdict(dict)
    for t in summary["suites"]:
        srows[t["suite"]][t["arm"]] = t
    for s, per_arm in srows.items():
        cells = [f"**{_fmt_rate(per_arm[a])}**" if a in per_arm else "-" for a in arms]
        lines.append(f"| **{s}** | **all tasks** | " + " | ".join(cells) + " |")
    lines.append("")
    if summary["paired"]:
        lines += [
            "## Paired A/B",
            "",
            "Same units in both arms. diff = rate(B) - rate(A), 95 % CI by Newcombe's hybrid score method for paired "
            "proportions (method 10); p = exact two-sided McNemar test on the discordant pairs."
            + (
                " These are fixed-design intervals and tests: valid for a run whose size was fixed in advance, not "
                "after a sequential stop (the decision, with its anytime-valid interval, is at the end)."
                if manifest and manifest.get("sequential")
                else ""
            ),
            "",
            "| suite | A | B | n | A ok | B ok | A only | B only | diff [95% CI] | McNemar p |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in summary["paired"]:
            lo, hi = p["diff_ci"]
            lines.append(
                f"| {p['suite']} | {p['a']} | {p['b']} | {p['n']} | {p['k_a']} | {p['k_b']} | {p['a_only']} | "
                f"{p['b_only']} | {100 * p['diff']:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}] | {p['p_mcnemar']:.4g} |"
            )
        lines.append("")
        lines += [
            f"- {p['suite']}, {p['b']} vs {p['a']}: {power_statement(p['n'], p['a_only'] + p['b_only'])}"
            for p in summary["paired"]
        ]
        lines.append("")
    if summary.get("robustness"):
        lines += [
            "## Robustness (LIBERO-PRO)",
            "",
            "Each perturbed suite beside its unperturbed suite, same tasks, initial states, seeds and arms; "
            "diff = rate(B) - rate(A) [95 % CI, Newcombe], p = exact McNemar.",
            "",
            "| perturbation | suite | A | B | n | A % | B % | diff [95% CI] | McNemar p |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in summary["robustness"]:
            lo, hi = r["diff_ci"]
            lines.append(
                f"| {r['perturbation']} | {r['suite']} | {r['a']} | {r['b']} | {r['n']} | {100 * r['rate_a']:.1f} | "
                f"{100 * r['rate_b']:.1f} | {100 * r['diff']:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}] | "
                f"{r['p_mcnemar']:.4g} |"
            )
        lines.append("")
    lines += ["## Errors", ""]
    if summary["errors"]:
        lines.append(
            f"{summary['n_errors']} unit(s) ended in an error after retries (not counted as failures):"
        )
        lines.append("")
        lines += [f"- `{e['key']}` (attempt {e['attempt']}): {e['error']}" for e in summary["errors"]]
    else:
        lines.append("none")
    lines.append("")
    if plot:
        lines += ["## Plot", "", f"![success](<{os.path.relpath(plot, base)}>)", ""]
    if videos:
        lines += ["## Videos (failures first)", ""]
        lines += [
            f"- [{' | '.join(v['labels'])}](<{os.path.relpath(v['path'], base)}>) -- `{v['keys'][0]}`"
            for v in videos
        ]
        lines.append("")
    if manifest and manifest.get("timing"):
        lines += ["## Throughput", ""] + [f"- {k}: {v}" for k, v in manifest["timing"].items()] + [""]
    if manifest and manifest.get("sequential"):  # the decision comes last
        seq = manifest["sequential"]
        d = seq["decision"]
        lo, hi = d["interval"]
        fixed = next((p for p in summary.get("paired") or []), None)
        intervals = (
            f"anytime-valid 95 % interval [{100 * lo:+.1f}, {100 * hi:+.1f}] pp (valid at every round)"
        )
        if fixed:
            intervals += (
                f"; fixed-design 95 % interval [{100 * fixed['diff_ci'][0]:+.1f}, {100 * fixed['diff_ci'][1]:+.1f}]"
                " pp (narrower; not valid after a sequential stop)"
            )
        lines += [
            "## Sequential A/B",
            "",
            f"- design: {seq.get('design', 'anytime')}; rule: {seq['rule']}",
            f"- episodes spent: {seq['episodes_spent']} (the fixed design: {seq['fixed_design_episodes']})",
            f"- paired difference {100 * d['estimate']:+.1f} pp; {intervals}",
            f"- decision: **{d['outcome']}** after {seq['rounds']} round(s), {d['n']} pairs: {d['reason']}",
            "",
        ]
    return "\n".join(lines)


def markdown_to_html(markdown_text: str) -> str:
    """The report's Markdown as HTML (CommonMark + tables, by markdown-it-py); raw HTML in the text is escaped."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}"
    "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
    "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
    "thead th{background:#f0f0f0}tbody tr:nth-child(even){background:#fafafa}"
    "code{background:#f6f6f6;padding:0 .2em}img{max-width:100%}figure{display:inline-block;margin:.5em}"
)


def render_html(markdown_text: str, plot: str | None, videos: list[dict], base: Path) -> str:
    """A self-contained page: the report rendered from its Markdown (tables as HTML tables, the plot as an image),
    then the A/B videos embedded as players. ``plot`` is already in the Markdown and kept for the signature."""
    parts = [
        "<!doctype html>",
        "<html><head><meta charset='utf-8'><title>ivra evaluation report</title>",
        f"<style>{_CSS}</style></head><body>",
        markdown_to_html(markdown_text),
    ]
    if videos:
        parts.append("<section id='videos'><h2>A/B videos (players)</h2>")
        for v in videos:
            rel = html.escape(os.path.relpath(v["path"], base), quote=True)
            cap = html.escape(" | ".join(v["labels"]) + " -- " + v["keys"][0])
            media = (
                f"<img src='{rel}' width='512' alt='{cap}'>"
                if rel.endswith(".gif")
                else f"<video src='{rel}' width='512' controls loop muted autoplay></video>"
            )
            parts.append(f"<figure>{media}<figcaption>{cap}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    records: list[dict],
    out_dir: str | os.PathLike,
    manifest: dict | None = None,
    videos: list[dict] | None = None,
) -> dict[str, Path]:
    """Write ``summary.json``, ``success.png``, ``report.md`` and ``report.html`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(records)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    plot = str(plot_success(summary, out / "success.png")) if summary["tasks"] else None
    md = render_markdown(summary, manifest, plot, videos or [], out)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(render_html(md, plot, videos or [], out))
    return {
        "summary": out / "summary.json",
        "plot": Path(plot) if plot else None,
        "markdown": out / "report.md",
        "html": out / "report.html",
    }
