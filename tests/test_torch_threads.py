"""Torch threads per worker (issue 23 item 8): settable (--torch-threads) in demo, sweep and eval libero, and one
per worker by default with worker processes, one worker included (torch's default there was 3-5x slower for
tiny-vla on 2 cores)."""

from __future__ import annotations

import json

import pytest

from ivra.cli import main


def _fake_libero(monkeypatch):
    from ivra.eval.libero import renderer
    from ivra.eval.libero import run as lrun

    monkeypatch.setattr(lrun, "ensure_config", lambda: None)
    monkeypatch.setattr(lrun, "git_revision", lambda: None)
    monkeypatch.setattr(renderer, "choose", lambda: ("egl", {}))
    monkeypatch.setattr(lrun, "execute", lambda *a, **k: [])


@pytest.mark.parametrize(
    "extra, threads",
    [
        (["--executor", "local"], 1),  # one worker: one thread too
        (["--executor", "local", "--workers", "2"], 1),
        (["--executor", "local", "--torch-threads", "2"], 2),
        (["--executor", "inline"], 0),  # this process: torch's default
        (["--executor", "inline", "--torch-threads", "1"], 1),
    ],
)
def test_eval_libero_threads_per_worker(extra, threads, tmp_path, monkeypatch):
    _fake_libero(monkeypatch)
    argv = ["eval", "libero", "--suite", "libero_spatial", "--tasks", "0", "--init-states", "0"]
    main([*argv, "--out", str(tmp_path), *extra])
    assert json.loads((tmp_path / "manifest.json").read_text())["config"]["torch_threads"] == threads


@pytest.mark.parametrize(
    "extra, threads",
    [(["--executor", "local"], 1), (["--executor", "local", "--torch-threads", "3"], 3), ([], None)],
)
def test_tabletop_threads_per_worker(extra, threads, tmp_path, monkeypatch):
    import ivra.eval.executor as executor

    jobs = []
    monkeypatch.setattr(executor, "execute", lambda job, *a, **k: jobs.append(job) or [])
    main(["demo", "--episodes", "1", "--chunk", "1", "--splits", "placement", "--out", str(tmp_path), *extra])
    assert jobs and jobs[0].threads == threads
