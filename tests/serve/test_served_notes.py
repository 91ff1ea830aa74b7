"""A served stand-in or random-weight policy is said as such by every client (issue 23 item 6): the server's metadata
carries ``stand_in`` / ``random_weights``, and ``ivra eval libero`` against it warns on stderr and writes them into
the manifest and the report, as for the same policy in-process."""

from __future__ import annotations

import json

import pytest

from ivra.cli import main
from ivra.policies.base import policy_notes
from ivra.policies.remote import RemotePolicy
from ivra.policies.sim import SimLatencyPolicy
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
