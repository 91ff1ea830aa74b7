"""The HTML report is a page: rendered by a real headless browser (Debian's chromium), its tables read back
cell by cell from the browser's DOM. Skips, saying why, when no chromium is installed
(``scripts/test.sh`` installs it with apt-get)."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ivra.eval.report import write_report

BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    how = (
        "install it with `apt-get install -y chromium` (scripts/test.sh does)"
        if shutil.which("apt-get")
        else "no apt-get on this machine to install Debian's chromium"
    )
    pytest.skip(f"no headless browser found ({', '.join(BROWSERS)} not on PATH): {how}")


def dump_dom(page: Path, tmp_path: Path) -> str:
    """The DOM after the browser parsed and laid out the page (``--dump-dom``)."""
    proc = subprocess.run(
        [
            _browser(),
            "--headless",
            "--no-sandbox",  # root in CI
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0 and "<body" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


class _Dom(HTMLParser):
    """Tables (rows of cell texts, header cells included), element counts and attributes from a DOM dump."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.tags: dict[str, list[dict]] = {}
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.setdefault(tag, []).append(dict(attrs))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _rec(task, state, arm, success, status="ok"):
    unit = {"key": f"s/t{task}/s{state}/{arm}", "suite": "libero_spatial", "task_id": task, "init_state": state,
            "seed": state, "arm": arm}  # fmt: skip
    result = None
    if status == "ok":
        result = {
            "suite": "libero_spatial",
            "task_id": task,
            "task": f"task {task}",
            "arm": arm,
            "success": success,
        }
    return {"key": unit["key"], "unit": unit, "status": status, "attempt": 1, "final": True, "result": result,
            "error": None if status == "ok" else "RuntimeError: <boom>", "meta": {}}  # fmt: skip


def _records():
    base = [1, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    ivra = [1, 1, 1, 1, 0, 1, 0, 1, 1, 0]
    recs = []
    for s in range(10):
        recs.append(_rec(s % 2, s, "baseline", bool(base[s])))
        recs.append(_rec(s % 2, s, "ivra", bool(ivra[s])))
    recs.append(_rec(0, 10, "ivra", False, status="error"))
    recs.append(_rec(0, 10, "baseline", True))
    return recs


def test_html_report_renders_tables_plot_and_videos_in_a_browser(tmp_path):
    out = tmp_path / "report"
    video = out / "videos" / "ab__t0_s1.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"not decoded by this test")
    manifest = {"benchmark": "LIBERO", "config": {"suite": "libero_spatial", "policy": "zero",
                "arms": {"baseline": None, "ivra": {"layer": 0, "lam": 0.3}}}}  # fmt: skip
    videos = [
        {"path": str(video), "keys": ["s/t0/s1/baseline"], "labels": ["baseline: fail", "ivra: success"]}
    ]
    paths = write_report(_records(), out, manifest=manifest, videos=videos)

    dom = _Dom()
    dom.feed(dump_dom(paths["html"], tmp_path))

    # the per-task table: header cells and the suite totals as the browser laid them out
    per_task = next(t for t in dom.tables if t and t[0][:2] == ["suite", "task"])
    assert per_task[0] == ["suite", "task", "baseline", "ivra"]
    totals = next(r for r in per_task if r[:2] == ["libero_spatial", "all tasks"])
    assert totals[2].startswith("4/11 = 36.4% [") and totals[3].startswith("7/10 = 70.0% [")
    assert ["libero_spatial", "1: task 1"] == next(r for r in per_task if r[1] == "1: task 1")[:2]
    # the paired A/B table: header and numbers
    paired = next(t for t in dom.tables if t and "McNemar p" in t[0])
    header, row = paired[0], paired[1]
    cell = dict(zip(header, row))
    assert (cell["A"], cell["B"], cell["n"], cell["A only"], cell["B only"]) == (
        "baseline",
        "ivra",
        "10",
        "0",
        "4",
    )
    assert cell["diff [95% CI]"].startswith("+40.0 pp [") and float(cell["McNemar p"]) == pytest.approx(0.125)
    # no Markdown left in the page: no table rules, no pre-formatted block; error text escaped, not markup
    text = "".join(dom.text)
    assert "|---" not in text and "pre" not in dom.tags and "boom" not in dom.tags
    assert "RuntimeError: <boom>" in text
    # the plot as an image and the A/B video as a player, both pointing at files that exist
    (img,) = [i for i in dom.tags.get("img", []) if i.get("alt") == "success"]
    assert (out / img["src"]).resolve() == paths["plot"].resolve() and paths["plot"].exists()
    (player,) = dom.tags["video"]
    assert (out / player["src"]).resolve() == video.resolve()
    assert "baseline: fail | ivra: success -- s/t0/s1/baseline" in text
