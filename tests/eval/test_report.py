"""Report (tables, paired A/B, plot, md/html) and videos from synthetic journal records."""

import numpy as np
import pytest

from ivra.eval.report import make_ab_videos, render_markdown, summarize, write_report
from ivra.eval.video import read_video, side_by_side, write_video


def _rec(task, state, arm, success, video=None, status="ok"):
    unit = {
        "key": f"s/t{task}/s{state}/{arm}",
        "suite": "libero_spatial",
        "task_id": task,
        "init_state": state,
        "seed": state,
        "arm": arm,
    }
    result = None
    if status == "ok":
        result = {
            "suite": "libero_spatial",
            "task_id": task,
            "task": f"task {task}",
            "arm": arm,
            "success": success,
            "video": video,
        }
    return {"key": unit["key"], "unit": unit, "status": status, "attempt": 1, "final": True, "result": result,
            "error": None if status == "ok" else "RuntimeError: boom", "meta": {}}  # fmt: skip


def _records():
    base = [1, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    ivra = [1, 1, 1, 1, 0, 1, 0, 1, 1, 0]
    recs = []
    for s in range(10):
        task = s % 2
        recs.append(_rec(task, s, "baseline", bool(base[s])))
        recs.append(_rec(task, s, "ivra", bool(ivra[s])))
    recs.append(_rec(0, 10, "ivra", False, status="error"))
    recs.append(_rec(0, 10, "baseline", True))
    return recs


def test_summary_tables_and_pairs():
    s = summarize(_records())
    assert s["arms"] == ["baseline", "ivra"]
    assert s["n_errors"] == 1 and s["errors"][0]["key"] == "s/t0/s10/ivra"
    suites = {r["arm"]: r for r in s["suites"]}
    assert (suites["baseline"]["k"], suites["baseline"]["n"]) == (4, 11)
    assert (suites["ivra"]["k"], suites["ivra"]["n"]) == (7, 10)  # the errored unit is not a failure
    (p,) = s["paired"]
    # pairs only where both arms finished: 10 pairs; baseline-only successes 0, ivra-only 4
    assert (p["n"], p["k_a"], p["k_b"], p["a_only"], p["b_only"]) == (10, 3, 7, 0, 4)
    assert p["diff"] == pytest.approx(0.4) and p["p_mcnemar"] == pytest.approx(2 / 16)
    tasks = [t for t in s["tasks"] if t["arm"] == "ivra"]
    assert [(t["task_id"], t["k"], t["n"]) for t in tasks] == [(0, 3, 5), (1, 4, 5)]


def test_write_report_files(tmp_path):
    manifest = {"benchmark": "LIBERO", "config": {"suite": "libero_spatial", "policy": "zero", "arms": {"baseline": None, "ivra": {"lam": 0.3}}},
                "deviations": ["max steps: 30 instead of 220 for libero_spatial"], "renderer": "egl"}  # fmt: skip
    paths = write_report(_records(), tmp_path, manifest=manifest)
    md = paths["markdown"].read_text()
    assert "max steps: 30 instead of 220" in md and "McNemar" in md and "RuntimeError: boom" in md
    assert "4/11" in md and "7/10" in md
    assert paths["plot"].stat().st_size > 1000 and paths["plot"].read_bytes()[:4] == b"\x89PNG"
    html = paths["html"].read_text()
    assert "success.png" in html and "<table>" in html and "<pre>" not in html


def test_videos_side_by_side_failures_first(tmp_path):
    ep = tmp_path / "episodes"
    recs = []
    for s, (b, i) in enumerate([(True, True), (False, True), (False, False)]):
        for arm, ok in (("baseline", b), ("ivra", i)):
            frames = [np.full((32, 32, 3), 40 * s + 10 * k, np.uint8) for k in range(4 + s)]
            path = write_video(ep / f"s{s}_{arm}.mp4", frames, fps=10)
            recs.append(_rec(0, s, arm, ok, video=path.name))
    out = make_ab_videos(recs, ep, tmp_path / "videos", k=2)
    assert len(out) == 2
    assert out[0]["keys"][0].startswith("s/t0/s1/")  # discordant pair first
    assert out[1]["keys"][0].startswith("s/t0/s2/")  # then both failed
    frames = read_video(out[0]["path"])
    assert frames[0].shape[1] == 64 and len(frames) == 5


def test_gif_fallback_and_overlay(tmp_path):
    frames = [np.zeros((16, 16, 3), np.uint8)] * 3
    gif = write_video(tmp_path / "a.mp4", frames, prefer="gif", overlays=[np.random.rand(4, 4)] * 3)
    assert gif.suffix == ".gif" and read_video(gif)[0].shape == (16, 32, 3)
    both = side_by_side(tmp_path / "ab.mp4", [gif, gif], ["a", "b"])
    assert read_video(both)[0].shape[1] == 64


def test_robustness_rows_keep_the_sign_of_each_difference(tmp_path):
    """The LIBERO-PRO table beside the paired rows: per suite, diff = rate(B) - rate(A), its CI around it, with the
    sign of the suite's own effect (IVRA ahead on the base suite and on _swap, behind on _lan), also in report.md."""
    outcomes = {  # suite -> (baseline, ivra) successes over 10 pairs
        "libero_spatial": ([1, 0, 0, 1, 0, 0, 0, 0, 1, 0], [1, 1, 0, 1, 0, 1, 0, 0, 1, 0]),
        "libero_spatial_swap": ([0] * 10, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        "libero_spatial_lan": ([1, 1, 1, 0, 0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    }
    recs = []
    for suite, arms in outcomes.items():
        for arm, successes in zip(("baseline", "ivra"), arms):
            for s, ok in enumerate(successes):
                rec = _rec(s % 2, s, arm, bool(ok))
                rec["key"] = f"{suite}/{rec['key']}"
                rec["unit"]["suite"] = rec["result"]["suite"] = suite
                recs.append(rec)
    summary = summarize(recs)
    rows = {r["suite"]: r for r in summary["robustness"]}
    assert [rows[s]["perturbation"] for s in outcomes] == ["none", "swap", "lan"]
    for suite, (base, ivra) in outcomes.items():
        r = rows[suite]
        assert (r["a"], r["b"], r["n"]) == ("baseline", "ivra", 10)
        assert (r["rate_a"], r["rate_b"]) == (sum(base) / 10, sum(ivra) / 10)
        assert r["diff"] == pytest.approx(r["rate_b"] - r["rate_a"]), suite
        assert r["diff_ci"][0] <= r["diff"] <= r["diff_ci"][1], suite
    assert rows["libero_spatial"]["diff"] > 0 and rows["libero_spatial_swap"]["diff"] > 0
    assert rows["libero_spatial_lan"]["diff"] < 0
    text = render_markdown(summary, None, None, [], tmp_path)
    assert "| swap | libero_spatial_swap | baseline | ivra | 10 | 0.0 | 10.0 | +10.0 pp [" in text
    assert "| lan | libero_spatial_lan | baseline | ivra | 10 | 40.0 | 10.0 | -30.0 pp [" in text
