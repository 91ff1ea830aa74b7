"""Evaluation through the server: the tabletop A/B with its workers as clients gives the in-process episodes;
the journal keeps finished units when the server goes away, and the unit that was cut off is retried."""

from __future__ import annotations

import json
import threading
import time

import pytest
from serve_helpers import start

from ivra.config import IVRAConfig
from ivra.eval.executor import execute
from ivra.experiment.ab import TabletopABJob, make_units
from ivra.policies.remote import ServerUnavailable

CFG = IVRAConfig(layer=2, lam=0.5).to_dict()


def units():
    return make_units(["val"], 6, {"baseline": None, "ivra": CFG}, chunk=3)


def episodes(records):
    return {r["key"]: r["result"]["episodes"] for r in records}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, low_policy):
    job = TabletopABJob("low")
    job._policy = low_policy[0]  # the in-process policy, already loaded
    recs = execute(job, units(), tmp_path_factory.mktemp("ref") / "journal.jsonl", progress=False)
    assert all(r["status"] == "ok" for r in recs)
    return episodes(recs)


def test_tabletop_ab_through_the_server_matches_in_process(low_policy, reference, tmp_path):
    policy, spec = low_policy
    st = start(policy, spec, max_batch=8, max_wait_ms=5)
    try:
        recs = execute(TabletopABJob(st.url), units(), tmp_path / "journal.jsonl", progress=False)
        stats = dict(st.server.stats)
    finally:
        st.stop()
    assert all(r["status"] == "ok" for r in recs)
    assert episodes(recs) == reference
    assert stats["errors"] == 0 and stats["requests"] == sum(
        len(ep["actions"]) + ep["malformed"] for eps in reference.values() for ep in eps
    )


def first_call_of_second_unit(reference) -> int:
    """The policy call that starts the second unit: units run in order, a unit's episodes advance in lockstep
    (one call per step until its longest episode ends), so this call exists whatever the policy's skill."""
    first = reference[units()[0]["key"]]
    return max(len(ep["actions"]) + ep["malformed"] for ep in first) + 1


class _Restarter:
    """Stops the server from another thread once the policy has made ``after`` calls; restarts it on demand."""

    def __init__(self, policy, spec, after):
        self.inner, self.spec, self.after, self.calls = policy, spec, after, 0
        self.name, self.per_sample_ivra = policy.name, True
        self.st = None
        self.stopped = threading.Event()

    chunk_length = execute_steps = 1

    def predict(self, observations, instructions, seeds=None, ivra=None):
        self.calls += 1
        if self.calls == self.after:
            threading.Thread(target=self._stop).start()
        return self.inner.predict(observations, instructions, seeds, ivra=ivra)

    def _stop(self):
        self.st.stop()
        self.stopped.set()

    def restart(self, delay=0.0):
        assert self.stopped.wait(30)
        time.sleep(delay)
        self.st = start(self, self.spec, port=self.port, max_batch=8)


def test_client_rides_through_a_server_restart(low_policy, reference, tmp_path):
    policy, spec = low_policy
    r = _Restarter(policy, spec, after=first_call_of_second_unit(reference))
    r.st = start(r, spec, port=0, max_batch=8)
    r.port = r.st.server.port
    t = threading.Thread(target=r.restart, kwargs={"delay": 1.0})
    t.start()
    try:
        job = TabletopABJob(r.st.url, client_kwargs={"reconnect_s": 30})
        recs = execute(job, units(), tmp_path / "journal.jsonl", progress=False)
    finally:
        t.join(60)
        r.st.stop()
    assert all(rec["status"] == "ok" and rec["attempt"] == 1 for rec in recs)
    assert job._policy.reconnects == 1
    assert episodes(recs) == reference  # the episode cut off mid-way continued as if nothing happened


def test_unit_cut_off_is_journaled_and_retried(low_policy, reference, tmp_path):
    policy, spec = low_policy
    r = _Restarter(policy, spec, after=first_call_of_second_unit(reference))
    r.st = start(r, spec, port=0, max_batch=8)
    r.port = r.st.server.port

    class Job(TabletopABJob):
        def run(self, unit):
            try:
                return super().run(unit)
            except ServerUnavailable:
                r.restart()  # the operator brings the server back; the executor retries the unit
                raise

    journal = tmp_path / "journal.jsonl"
    try:
        recs = execute(
            Job(r.st.url, client_kwargs={"reconnect_s": 0.5}), units(), journal, retries=1, progress=False
        )
    finally:
        r.st.stop()
    assert r.stopped.is_set()
    failed = [rec for rec in recs if rec["attempt"] == 2]
    assert len(failed) == 1 and all(rec["status"] == "ok" for rec in recs)
    assert episodes(recs) == reference
    text = journal.read_text()
    assert text.count('"status": "error"') == 1 and "ServerUnavailable" in text
    # units finished before the cut were journaled once and not rerun
    first = failed[0]["key"]
    order = [u["key"] for u in units()]
    keys = [json.loads(line)["key"] for line in text.splitlines()]
    assert order.index(first) > 0
    for key in order[: order.index(first)]:
        assert keys.count(key) == 1


def test_ivra_demo_verb_through_the_server(low_policy, tmp_path, capsys):
    """`ivra demo --policy ws://...`: the pre-flight reaches the server, the episodes run through it, the table is
    written; the affinity figure (it needs the model in this process) is skipped with a reason."""
    from ivra.cli import main

    policy, spec = low_policy
    st = start(policy, spec, max_batch=8)
    try:
        code = main(
            [
                "demo",
                "--policy",
                st.url,
                "--episodes",
                "2",
                "--splits",
                "novel_task",
                "--chunk",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        requests = st.server.stats["requests"]
    finally:
        st.stop()
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["summary"]["rows"][0]["n"] == 2 and requests > 0
    assert "figure not written: the affinity figure needs the policy in this process" in captured.err


def test_ivra_demo_verb_with_no_server_is_a_usage_error(tmp_path, capsys):
    import socket

    from ivra.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert (
        main(["demo", "--policy", f"ws://127.0.0.1:{port}", "--episodes", "2", "--out", str(tmp_path)]) == 2
    )
    assert f"ws://127.0.0.1:{port} unreachable" in capsys.readouterr().err


def test_ivra_demo_refuses_a_served_policy_of_another_action_space(tmp_path, capsys):
    from ivra.cli import main
    from ivra.policies.sim import SimLatencyPolicy
    from ivra.serve.policies import ObsSpec

    st = start(SimLatencyPolicy(0, 0), ObsSpec(action_dim=7))  # a LIBERO-side policy's 7-D actions
    try:
        code = main(["demo", "--policy", st.url, "--episodes", "2", "--out", str(tmp_path)])
    finally:
        st.stop()
    assert code == 2
    assert f"--policy {st.url}: the served policy (sim) answers 7-D actions; the tabletop takes 4" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "journal.jsonl").exists()
