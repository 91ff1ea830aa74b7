"""A served stand-in or random-weight policy is said as such by every client (issue 23 item 6): the server's metadata
carries ``stand_in`` / ``random_weights``, and ``ivra eval libero`` against it warns on stderr and writes them into
the manifest and the report, as for the same policy in-process; ``ivra demo`` and ``ivra sweep`` into results.json
and table.md."""

from __future__ import annotations

import json

import pytest

from ivra.cli import main
from ivra.policies.base import policy_notes
from ivra.policies.remote import RemotePolicy
from ivra.policies.sim import SimLatencyPolicy
from ivra.serve.policies import ObsSpec
from ivra.serve.server import PolicyServer, ServeOptions, ServerThread


@pytest.fixture
def served_sim():
    st = ServerThread(
        PolicyServer(SimLatencyPolicy(fixed_ms=0, per_sample_ms=0), ServeOptions(port=0))
    ).start()
    try:
        yield st.url
    finally:
        st.stop()


def test_the_metadata_says_what_the_policy_is(served_sim):
    rp = RemotePolicy(served_sim)
    try:
        assert rp.metadata["stand_in"] == SimLatencyPolicy.stand_in and rp.metadata["random_weights"] is None
        assert policy_notes(rp) == {
            "random_weights": None,
            "stand_in": f"served by {served_sim}: {SimLatencyPolicy.stand_in}",
        }
    finally:
        rp.close()


def test_eval_libero_against_a_served_sim_says_stand_in_everywhere(served_sim, tmp_path, monkeypatch, capsys):
    from ivra.eval.libero import renderer
    from ivra.eval.libero import run as lrun

    monkeypatch.setattr(lrun, "ensure_config", lambda: None)
    monkeypatch.setattr(lrun, "git_revision", lambda: None)
    monkeypatch.setattr(renderer, "choose", lambda: ("egl", {}))
    monkeypatch.setattr(lrun, "execute", lambda *a, **k: [])
    out = tmp_path / "run"
    argv = ["eval", "libero", "--suite", "libero_spatial", "--policy", served_sim, "--tasks", "0"]
    main([*argv, "--init-states", "0", "--out", str(out)])
    err = capsys.readouterr().err
    assert f"WARNING: policy {served_sim} is a STAND-IN (served by {served_sim}: sim: a latency model" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stand_in"] == f"served by {served_sim}: {SimLatencyPolicy.stand_in}"
    assert manifest["deviations"][0].startswith(f"STAND-IN: served by {served_sim}: sim: a latency model")
    assert manifest["policy_server"]["policy"] == "sim"
    report = (out / "report.md").read_text()
    assert f"policy `{served_sim}` (served: `sim`)" in report and "STAND-IN: served by" in report


def test_demo_and_sweep_against_a_served_stand_in_say_so(tmp_path, capsys):
    """`ivra demo` and `ivra sweep` against a server whose policy is a stand-in (`sim`) with random weights (noted
    on this instance, as tiny-vla notes its own) warn on stderr and record both notes, from the server's metadata,
    in results.json and the table, as `ivra eval libero` does."""
    policy = SimLatencyPolicy(0, 0, action_dim=4)  # the tabletop's 4-D actions
    policy.random_weights = "a test model: random weights"
    st = ServerThread(PolicyServer(policy, ServeOptions(port=0), ObsSpec(action_dim=4))).start()
    common = ["--policy", st.url, "--episodes", "2", "--chunk", "2"]
    try:
        demo = main(["demo", *common, "--splits", "novel_task", "--out", str(tmp_path / "demo")])
        demo_err = capsys.readouterr().err
        sweep = main(["sweep", *common, "--layers", "0", "--lams", "0.1", "--out", str(tmp_path / "sweep")])
        sweep_err = capsys.readouterr().err
    finally:
        st.stop()
    assert demo == 0 and sweep == 0, demo_err + sweep_err
    for verb, err in (("demo", demo_err), ("sweep", sweep_err)):
        assert f"WARNING: policy {st.url} is a STAND-IN (served by {st.url}: sim: a latency model" in err, (
            verb
        )
        assert f"WARNING: policy {st.url} runs RANDOM WEIGHTS (served by {st.url}: a test model" in err, verb
        result = json.loads((tmp_path / verb / "results.json").read_text())
        assert result["stand_in"].startswith(f"served by {st.url}: sim: a latency model"), verb
        assert result["random_weights"] == f"served by {st.url}: a test model: random weights", verb
        table = (tmp_path / verb / "table.md").read_text().splitlines()
        assert table[0].startswith("RANDOM WEIGHTS: served by") and table[2].startswith(
            "STAND-IN: served by"
        ), verb
