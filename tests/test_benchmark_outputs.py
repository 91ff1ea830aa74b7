"""The benchmark scripts write their results to an untracked folder (runs/benchmarks/) unless asked to update the
recorded, tracked result under benchmarks/results/ (``--record`` or IVRA_BENCH_RECORD=1)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sandbox(tmp_path: Path) -> Path:
    """A checkout-shaped folder with a copy of overhead.sh and the project's .venv: whatever the script writes
    lands here, never in the real benchmarks/results/."""
    ws = tmp_path / "ws"
    (ws / "benchmarks" / "results").mkdir(parents=True)
    shutil.copy2(ROOT / "benchmarks" / "overhead.sh", ws / "benchmarks" / "overhead.sh")
    (ws / ".venv").symlink_to(ROOT / ".venv")
    return ws


def _overhead(ws: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("benchmarks/overhead.sh runs .venv/bin/python: no .venv here (bash scripts/setup.sh)")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IVRA_BENCH_")}
    proc = subprocess.run(
        ["bash", str(ws / "benchmarks" / "overhead.sh"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**full_env, **env},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def _written(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("overhead_tiny_*.json")) if folder.exists() else []


def test_overhead_sh_writes_untracked_by_default_and_records_only_when_asked(tmp_path):
    ws = _sandbox(tmp_path)
    _overhead(ws, "tiny", "3")
    assert _written(ws / "benchmarks" / "results") == []  # the tracked folder is left alone
    (name,) = _written(ws / "runs" / "benchmarks")
    assert name.startswith("overhead_tiny_")

    _overhead(ws, "--record", "tiny", "3")
    assert _written(ws / "benchmarks" / "results") == [name]

    (ws / "benchmarks" / "results" / name).unlink()
    other = tmp_path / "elsewhere"
    _overhead(ws, "tiny", "3", IVRA_BENCH_OUT_DIR=str(other))
    assert _written(other) == [name] and _written(ws / "benchmarks" / "results") == []
    _overhead(ws, "tiny", "3", IVRA_BENCH_RECORD="1")
    assert _written(ws / "benchmarks" / "results") == [name]


def _load(script: str):
    spec = importlib.util.spec_from_file_location(f"bench_{script}", ROOT / "benchmarks" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "script,name",
    [("serve_throughput", "serve_throughput_cpu.json"), ("smolvla_overhead", "smolvla_overhead_cpu.json")],
)
def test_python_benchmarks_write_untracked_by_default(script, name, monkeypatch, tmp_path):
    monkeypatch.delenv("IVRA_BENCH_RECORD", raising=False)
    monkeypatch.delenv("IVRA_BENCH_OUT_DIR", raising=False)
    mod = _load(script)
    assert mod.output_path(mod.parser().parse_args([])) == ROOT / "runs" / "benchmarks" / name
    recorded = ROOT / "benchmarks" / "results" / name
    assert mod.output_path(mod.parser().parse_args(["--record"])) == recorded
    assert recorded.exists()  # the tracked result that --record updates
    assert (
        mod.output_path(mod.parser().parse_args(["--out", str(tmp_path / "r.json")])) == tmp_path / "r.json"
    )
    monkeypatch.setenv("IVRA_BENCH_RECORD", "1")
    assert mod.output_path(mod.parser().parse_args([])) == recorded
    monkeypatch.setenv("IVRA_BENCH_RECORD", "0")
    monkeypatch.setenv("IVRA_BENCH_OUT_DIR", str(tmp_path))
    assert mod.output_path(mod.parser().parse_args([])) == tmp_path / name
    help_text = mod.parser().format_help()
    assert "runs/benchmarks" in help_text and "--record" in help_text
