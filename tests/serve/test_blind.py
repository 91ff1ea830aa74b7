"""Blind real-robot A/B: balanced seeded assignment per episode, applied by the server but never shown, operator
outcomes from the terminal, unblinded paired and unpaired statistics."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from websockets.sync.client import connect

from ivra.config import IVRAConfig
from ivra.episodes import EpisodeRunner, chunk_seed
from ivra.policies.remote import RemotePolicy, ServerError
from ivra.policies.sim import SimLatencyPolicy
from ivra.serve import wire
from ivra.serve.blind import BlindAB, arm_of, record_outcomes, report
from ivra.serve.policies import ObsSpec
from ivra.serve.server import PolicyServer, ServeOptions, ServerThread

CFG = IVRAConfig(layer=2, lam=0.25).to_dict()
SPEC = ObsSpec(image_shape=(8, 8, 3), action_dim=7)


def test_schedule_is_balanced_seeded_and_varied():
    for seed in range(5):
        arms = [arm_of(seed, i) for i in range(200)]
        assert all({arms[2 * p], arms[2 * p + 1]} == {"baseline", "ivra"} for p in range(100))
        assert arms == [arm_of(seed, i) for i in range(200)]  # reproducible
        firsts = [arms[2 * p] for p in range(100)]
        assert 30 < firsts.count("ivra") < 70  # the order within a pair is random
    assert [arm_of(0, i) for i in range(40)] != [arm_of(1, i) for i in range(40)]


def test_server_applies_the_hidden_arm_per_episode(tmp_path):
    """Chunk episodes stepped in lockstep by an EpisodeRunner over RemotePolicy (the runner hands it each row's
    episode) get their own hidden arm and the in-process chunks of their seed; openpi-style clients without
    episode_id get one episode per connection, and reset: true starts the next."""
    blind = BlindAB(tmp_path / "ab", CFG, seed=3, policy="sim")
    policy = SimLatencyPolicy(0, 0, chunk=4, execute=2)
    st = ServerThread(PolicyServer(policy, ServeOptions(port=0), SPEC, blind=blind)).start()
    try:
        rp = RemotePolicy(st.url)
        assert rp.metadata["ab"] == "blind" and "default_ivra" not in rp.metadata
        assert (rp.chunk_length, rp.execute_steps) == (4, 2)
        obs = [{"image": np.full((8, 8, 3), 50 + 10 * j, np.uint8)} for j in range(3)]
        text = ["stack the cups"] * 3
        for group in ((0, 1, 2), (3, 4, 5)):  # episodes 0-2, then 3-5: three in lockstep at a time
            runner = EpisodeRunner(rp)
            eps = [runner.start(seed=100 + e) for e in group]
            got = np.stack([runner.step(eps, obs, text) for _ in range(5)])  # 3 chunks per episode
            for j, e in enumerate(group):
                arm = CFG if arm_of(3, e) == "ivra" else None
                want = [
                    SimLatencyPolicy.expected_chunk(obs[j], text[j], 7, arm, chunk_seed(100 + e, k), 4)[t]
                    for k in range(3)
                    for t in range(2)
                ][:5]
                np.testing.assert_array_equal(got[:, j], want)  # its own arm, its own seeded chunks
        assert max(policy.batch_sizes) == 3  # lockstep episodes shared one call
        # a call that does not say which episode its rows belong to, or that asks for an arm, is refused
        with pytest.raises(ValueError, match="blind A/B .* each row needs its episode"):
            rp.predict(obs[:1], text[:1], [chunk_seed(999, 0)])
        one = EpisodeRunner(rp).start(seed=999, ivra=CFG)
        with pytest.raises(
            ValueError, match="blind A/B: the server assigns the arm per episode, a request cannot"
        ):
            rp.predict(obs[:1], text[:1], [one.next_seed()], [CFG], [one.identity])
        with pytest.raises(ServerError, match="blind A/B: the arm is assigned per episode"):
            ws = connect(st.url, legacy=True)
            ws.recv(timeout=10)
            ws.send(wire.packb({"observation/image": obs[0]["image"], "prompt": "x", "ivra": None}))
            reply = ws.recv(timeout=10)
            ws.close()
            raise ServerError(reply)
        # an openpi-style client without episode_id: one connection = one episode; reset: true starts the next
        for resets in ((False, False), (False, True)):
            ws = connect(st.url, legacy=True)
            ws.recv(timeout=10)
            for reset in resets:
                ws.send(wire.packb({"observation/image": obs[0]["image"], "prompt": "x", "reset": reset}))
                assert not isinstance(ws.recv(timeout=10), str)
            ws.close()
        rp.close()
    finally:
        st.stop()
    lines = [json.loads(s) for s in (tmp_path / "ab" / "episodes.jsonl").read_text().splitlines()]
    assert [e["episode"] for e in lines] == list(range(9))
    assert all("arm" not in e for e in lines)  # nothing the operator sees holds the arm
    # resuming continues the numbering; another seed in the same folder is refused
    again = BlindAB(tmp_path / "ab", CFG, seed=3, policy="sim")
    assert again.arm_for("new")[0] == arm_of(3, 9)
    with pytest.raises(ValueError, match="different configuration: --ab-seed: 3 -> 4; .* another --ab-dir"):
        BlindAB(tmp_path / "ab", CFG, seed=4, policy="sim")


def test_lockstep_episodes_with_one_seed_keep_their_own_blind_episodes(tmp_path):
    """Two episodes with the same seed stepped together (a paired scene, say) are two blind episodes, each with
    its own arm: the runner hands the client each row's episode; the rows' noise seeds cannot tell them apart."""
    blind = BlindAB(tmp_path / "ab", CFG, seed=3, policy="sim")
    st = ServerThread(
        PolicyServer(SimLatencyPolicy(0, 0, chunk=3, execute=1), ServeOptions(port=0), SPEC, blind=blind)
    ).start()
    try:
        rp = RemotePolicy(st.url)
        runner = EpisodeRunner(rp)
        eps = [runner.start(seed=7), runner.start(seed=7)]
        obs, text = [{"image": np.full((8, 8, 3), 90, np.uint8)}] * 2, ["open the drawer"] * 2
        got = np.stack([runner.step(eps, obs, text) for _ in range(3)])  # a chunk per step (execute=1)
        rp.close()
    finally:
        st.stop()
    assert {arm_of(3, 0), arm_of(3, 1)} == {"baseline", "ivra"}  # a pair: one episode in each arm
    for j in range(2):
        arm = CFG if arm_of(3, j) == "ivra" else None
        want = [
            SimLatencyPolicy.expected_chunk(obs[j], text[j], 7, arm, chunk_seed(7, k), 3)[0] for k in range(3)
        ]
        np.testing.assert_array_equal(got[:, j], want)
    assert not np.array_equal(got[:, 0], got[:, 1])  # the arms differ, so the actions do
    lines = [json.loads(s) for s in (tmp_path / "ab" / "episodes.jsonl").read_text().splitlines()]
    assert [e["episode"] for e in lines] == [0, 1]


def test_trials_records_outcomes_and_report_unblinds(tmp_path):
    folder = tmp_path / "ab"
    blind = BlindAB(folder, CFG, seed=7, policy="sim")
    for e in range(10):
        blind.arm_for(f"ep{e}")
    # the operator's answers; episode 9 is skipped (its pair stays incomplete), one typo is asked again
    answers = ["y", "n", "y", "y", "n", "y", "maybe", "y", "n", "y", "s"]
    out = io.StringIO()
    assert record_outcomes(folder, io.StringIO("\n".join(answers) + "\n"), out) == 0
    assert "expected y, n, s or q, got 'maybe'" in out.getvalue()
    assert "ivra" not in out.getvalue() and "baseline" not in out.getvalue()
    success = {0: True, 1: False, 2: True, 3: True, 4: False, 5: True, 6: True, 7: False, 8: True, 9: None}
    rec = {
        json.loads(s)["episode"]: json.loads(s)["success"]
        for s in (folder / "outcomes.jsonl").read_text().splitlines()
    }
    assert rec == {k: v for k, v in success.items() if v is not None}
    # a second session asks only for the skipped episode
    out2 = io.StringIO()
    record_outcomes(folder, io.StringIO("q\n"), out2)
    assert "1 episode(s) waiting" in out2.getvalue() and "episode 9 " in out2.getvalue()

    r = report(folder)
    arms = {i: arm_of(7, i) for i in range(10)}
    for a in ("baseline", "ivra"):
        vals = [success[i] for i in range(9) if arms[i] == a]
        assert r["arms"][a]["n"] == len(vals) and r["arms"][a]["successes"] == sum(vals)
    pairs = range(4)  # pairs 0-3 complete, pair 4 lacks episode 9
    base = [success[i] for p in pairs for i in (2 * p, 2 * p + 1) if arms[i] == "baseline"]
    treat = [success[i] for p in pairs for i in (2 * p, 2 * p + 1) if arms[i] == "ivra"]
    assert r["paired"]["n"] == 4
    assert r["paired"]["rate_a"] == sum(base) / 4 and r["paired"]["rate_b"] == sum(treat) / 4
    assert r["paired"]["b_only"] == sum(1 for x, y in zip(base, treat) if y and not x)
    lo, hi = r["unpaired"]["diff_ci"]
    assert lo <= r["unpaired"]["diff"] <= hi and 0 <= r["unpaired"]["p_fisher"] <= 1
    assert (folder / "report.md").read_text().startswith("# Blind A/B (unblinded)")


def test_trials_cli_errors(tmp_path):
    from ivra.cli import main

    assert main(["trials", str(tmp_path / "nothing")]) == 2
    assert main(["trials", str(tmp_path / "nothing"), "--report"]) == 2


def test_report_header_names_the_treatment_in_words(tmp_path):
    treatment = IVRAConfig(layer=0, lam=0.3, affinity_mode="softmax").to_dict()
    BlindAB(tmp_path / "ab", treatment, seed=5, policy="low").arm_for("ep0")
    header = report(tmp_path / "ab")["markdown"].splitlines()[0]
    # the setting as describe_setting writes it (non-default extras appended), no debug template
    assert (
        header
        == "# Blind A/B (unblinded): policy low; treatment IVRA layer=0, lam=0.3, affinity_mode=softmax; seed 5"
    )
    assert (tmp_path / "ab" / "report.md").read_text().splitlines()[0] == header


def test_trials_say_when_the_sequential_rule_decides_without_unblinding(tmp_path):
    """After each operator session the rule says whether the A/B is decided (not which way); --report states
    the decision with its sign. Pairs where IVRA always succeeds and the baseline never: an effect."""
    folder = tmp_path / "ab"
    blind = BlindAB(folder, CFG, seed=3, policy="sim")
    for e in range(40):
        blind.arm_for(f"ep{e}")
    answers = ["y" if arm_of(3, e) == "ivra" else "n" for e in range(40)]
    out = io.StringIO()
    assert record_outcomes(folder, io.StringIO("\n".join(answers[:4]) + "\nq\n"), out, delta=0.1) == 0
    assert "sequential rule: not decided after 2 complete pairs" in out.getvalue()
    out = io.StringIO()
    assert record_outcomes(folder, io.StringIO("\n".join(answers[4:]) + "\n"), out, delta=0.1) == 0
    text = out.getvalue()
    assert "the A/B is decided after 20 complete pairs (an effect)" in text
    assert (
        "better" not in text
        and "worse" not in text
        and "ivra" not in text.split("sequential rule")[1].split(";")[0]
    )
    r = report(folder, delta=0.1)
    assert r["sequential"]["outcome"] == "effect" and "ivra better than baseline" in r["sequential"]["reason"]
    md = (folder / "report.md").read_text().strip()
    assert (
        "**effect** after 20 pairs" in md.splitlines()[-1]
        and "anytime-valid 95 % interval" in md.splitlines()[-1]
    )
    assert "power (`ivra plan`): 20 pairs" in md  # the planner's statement of power
