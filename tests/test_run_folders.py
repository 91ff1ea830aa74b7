"""One configuration per run folder, for every verb that writes one (demo, sweep, eval libero, serve's blind A/B
folder, trials): the same command resumes; a changed option is refused (exit 2) naming what differs, before anything
in the folder changes. The check is one function (:mod:`ivra.eval.runfolder`)."""

from __future__ import annotations

import io
import json

import pytest

from ivra.cli import main
from ivra.eval import runfolder


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _refused(capsys, argv, *expected: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds a run with a different configuration" in err, err
    for text in expected:
        assert text in err, err
    return err


def test_demo_refuses_a_changed_setting(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IVRA_SETTING_FILE", str(tmp_path / "none.json"))
    out = tmp_path / "demo"
    argv = ["demo", "--episodes", "1", "--chunk", "1", "--splits", "placement", "--out", str(out)]
    assert main([*argv, "--ivra", "layer=0,lam=0.3"]) == 0
    before = _snapshot(out)
    _refused(capsys, [*argv, "--ivra", "layer=1,lam=0.3"], "--ivra: layer 0 -> 1;", "pass another --out")
    _refused(capsys, [*argv, "--ivra", "layer=0,lam=0.3", "--chunk", "2"], "--chunk: 1 -> 2")
    assert _snapshot(out) == before  # journal, results, tables: untouched
    # without --ivra, the default setting (here the paper's) is the configuration
    _refused(capsys, argv, "--ivra: layer 0 -> 2")
    # how it computes is not its configuration, nor is an option the run does not use: a resume may change them
    assert (
        main([*argv, "--ivra", "layer=0,lam=0.3", "--rerun-errors", "--torch-threads", "2", "--delta", "0.1"])
        == 0
    )


def test_sweep_refuses_a_changed_grid(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--episodes", "1", "--chunk", "1", "--layers", "0", "--out", str(out)]
    assert main([*argv, "--lams", "0.1"]) in (0, 1)
    before = _snapshot(out)
    _refused(capsys, [*argv, "--lams", "0.3"], "--lams: [0.1] -> [0.3]")
    assert _snapshot(out) == before
    # the default grid (every layer of the policy) is resolved before it is compared
    _refused(
        capsys, ["sweep", "--episodes", "1", "--chunk", "1", "--lams", "0.1", "--out", str(out)], "--layers"
    )


def test_eval_libero_refuses_a_changed_option(tmp_path, capsys, monkeypatch):
    from ivra.eval.libero import renderer
    from ivra.eval.libero import run as lrun

    monkeypatch.setattr(lrun, "ensure_config", lambda: None)
    monkeypatch.setattr(lrun, "git_revision", lambda: None)
    monkeypatch.setattr(renderer, "choose", lambda: ("egl", {}))
    monkeypatch.setattr(lrun, "execute", lambda *a, **k: [])
    calls = []
    monkeypatch.setattr(runfolder, "refuse_changed", _spy(runfolder.refuse_changed, calls))
    out = tmp_path / "libero"
    argv = [
        "eval",
        "libero",
        "--suite",
        "libero_spatial",
        "--tasks",
        "0",
        "--init-states",
        "0",
        "--out",
        str(out),
    ]
    main([*argv, "--max-steps", "20"])
    before = _snapshot(out)
    _refused(capsys, [*argv, "--max-steps", "30"], "--max-steps: 20 -> 30")
    assert calls  # the shared check refused it
    assert _snapshot(out) == before


def _spy(fn, calls):
    def wrapped(*a, **k):
        calls.append(a)
        return fn(*a, **k)

    return wrapped


def test_serve_refuses_a_changed_blind_ab_folder(tmp_path, capsys):
    from ivra.serve.blind import BlindAB

    folder = tmp_path / "ab"
    BlindAB(folder, {"layer": 0, "lam": 0.1}, seed=0, policy="zero").arm_for("ep0")
    before = _snapshot(folder)
    argv = ["serve", "--policy", "zero", "--port", "0", "--ab", "blind", "--ab-dir", str(folder)]
    _refused(capsys, [*argv, "--ivra", "layer=0,lam=0.2"], "--ivra: lam 0.1 -> 0.2", "another --ab-dir")
    _refused(capsys, [*argv, "--ivra", "layer=0,lam=0.1", "--ab-seed", "1"], "--ab-seed: 0 -> 1")
    assert _snapshot(folder) == before


def test_trials_refuses_a_changed_stop_rule(tmp_path, capsys, monkeypatch):
    from ivra.serve.blind import BlindAB

    folder = tmp_path / "ab"
    blind = BlindAB(folder, {"layer": 0, "lam": 0.1}, seed=0, policy="zero")
    for e in range(4):
        blind.arm_for(f"ep{e}")
    monkeypatch.setattr("sys.stdin", io.StringIO("y\nn\n"))
    assert main(["trials", str(folder)]) == 0
    assert json.loads((folder / "trials.json").read_text())["config"] == {"delta": 0.1, "max_pairs": None}
    before = _snapshot(folder)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\ny\n"))
    _refused(capsys, ["trials", str(folder), "--delta", "0.05"], "--delta: 0.1 -> 0.05")
    _refused(capsys, ["trials", str(folder), "--report", "--max-pairs", "10"], "--max-pairs: default -> 10")
    assert _snapshot(folder) == before  # no outcome recorded, no report written
    assert main(["trials", str(folder), "--report"]) == 0


def test_the_shared_check_names_each_difference(tmp_path):
    from ivra.cliargs import UsageError

    runfolder.claim(tmp_path, "x", {"a": 1, "d": {"k": 1}, "t": (1, 2)})
    runfolder.claim(tmp_path, "x", {"a": 1, "d": {"k": 1}, "t": [1, 2]})  # as JSON stores it: the same
    with pytest.raises(UsageError) as err:
        runfolder.claim(tmp_path, "x", {"a": 2, "d": {"k": 1, "j": 0}, "t": [1, 2]}, options={"a": "--aa"})
    assert str(err.value) == (
        f"{tmp_path} holds a run with a different configuration: --aa: 1 -> 2; --d: j absent -> 0; "
        f"{runfolder.TODO}"
    )
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(UsageError, match="is not a run record"):
        runfolder.claim(tmp_path, "x", {"a": 1})
