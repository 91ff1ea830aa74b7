"""Both arms in one batch: per-sample IVRA settings on one model, one forward pass, baseline rows bit-identical
to a baseline-only batch, IVRA rows identical to an all-IVRA batch; and the same through the server."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from serve_helpers import start

from ivra.config import IVRAConfig
from ivra.engine import attach
from ivra.minivla.model import prompt_batch
from ivra.policies.arms import SampleArms

A = IVRAConfig(layer=2, lam=0.5).to_dict()
B = IVRAConfig(layer=3, lam=0.3, affinity_mode="relu").to_dict()
ARMS = [None, A, None, B, A, None, B, A]


def logits_fn(policy, obs):
    def fn(rows):
        batch = prompt_batch(
            policy.tokenizer,
            policy.spec,
            np.stack([obs[i]["image"] for i in rows]),
            [obs[i]["instruction"] for i in rows],
        )
        with torch.no_grad():
            return policy.model(**batch).logits[:, -1].float().numpy()

    return fn


def test_one_batch_carries_every_arm_exactly(low_policy, tabletop_obs):
    policy, _ = low_policy
    obs = tabletop_obs[: len(ARMS)]
    fn = logits_fn(policy, obs)
    rows = list(range(len(obs)))
    baseline = fn(rows)
    per_arm = {}
    for cfg in (A, B):
        with attach(policy.model, IVRAConfig(**cfg)):
            per_arm[str(cfg)] = fn(rows)
    arms = SampleArms(policy.model)
    mixed = arms.run(ARMS, fn)
    assert arms.passes == 1  # one forward pass for three arms
    for i, cfg in enumerate(ARMS):
        want = baseline[i] if cfg is None else per_arm[str(cfg)][i]
        np.testing.assert_array_equal(mixed[i], want, err_msg=f"row {i} arm {cfg}")
        if cfg is not None:  # the test can fail: IVRA changes these logits
            assert not np.array_equal(mixed[i], baseline[i])
    assert not any(h for h in policy.model._forward_pre_hooks.values()), "handles detached after the batch"
    np.testing.assert_array_equal(fn(rows), baseline)  # and the model is back to the baseline


def test_policy_act_with_per_sample_arms(low_policy, tabletop_obs):
    policy, _ = low_policy
    obs = tabletop_obs[: len(ARMS)]
    instr = [o["instruction"] for o in obs]
    mixed = policy.act(obs, instr, ivra=ARMS)
    base = policy.act(obs, instr)
    for cfg in (A, B):
        policy.set_ivra(cfg)
        try:
            treated = policy.act(obs, instr)
        finally:
            policy.set_ivra(None)
        for i, c in enumerate(ARMS):
            if c == cfg:
                np.testing.assert_array_equal(mixed[i], treated[i])
    for i, c in enumerate(ARMS):
        if c is None:
            np.testing.assert_array_equal(mixed[i], base[i])
    with pytest.raises(ValueError, match="ivra has 2 entries for a batch of 8"):
        policy.act(obs, instr, ivra=[None, A])


def test_tiny_vla_per_sample_arms():
    from ivra.policies.vla import DEFAULT_IVRA, TinyVLAPolicy

    pol = TinyVLAPolicy()
    rng = np.random.default_rng(0)
    obs = [{"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)} for _ in range(4)]
    instr = ["pick up the red block"] * 4
    arms = [None, DEFAULT_IVRA, DEFAULT_IVRA, None]
    mixed = pol.act(obs, instr, ivra=arms)
    np.testing.assert_array_equal(mixed[[0, 3]], pol.act(obs, instr)[[0, 3]])
    pol.set_ivra(DEFAULT_IVRA)
    np.testing.assert_array_equal(mixed[[1, 2]], pol.act(obs, instr)[[1, 2]])
    pol.set_ivra(None)


def test_server_batches_both_arms_together(low_policy, tabletop_obs):
    """Requests with different 'ivra' entries, sent concurrently, share policy calls and get their own arm."""
    from ivra.policies.remote import RemotePolicy

    policy, spec = low_policy
    obs = tabletop_obs[: len(ARMS)]
    instr = [o["instruction"] for o in obs]
    want = policy.act(obs, instr, ivra=ARMS)
    st = start(policy, spec, max_batch=16, max_wait_ms=50)
    try:
        rp = RemotePolicy(st.url)
        got = rp.act(obs, instr, ivra=ARMS)  # pipelined on one connection: one batch
        sizes = dict(st.server.stats["batch_sizes"])
        rp.close()
    finally:
        st.stop()
    np.testing.assert_array_equal(got, want)
    assert sizes == {len(ARMS): 1}, sizes


def test_explicit_nil_arm_gets_the_baseline_on_a_server_with_a_default_arm(low_policy, tabletop_obs):
    """On a server started with a default IVRA arm, a request with "ivra": nil is the baseline, and one without
    the key gets the default arm."""
    from ivra.policies.remote import RemotePolicy

    policy, spec = low_policy
    obs = tabletop_obs[:4]
    instr = [o["instruction"] for o in obs]
    base = policy.act(obs, instr, ivra=[None] * 4)
    treated = policy.act(obs, instr, ivra=[A] * 4)
    assert not np.array_equal(base, treated)  # the default arm visibly differs from the baseline here
    st = start(policy, spec, max_batch=16, max_wait_ms=50, default_ivra=A)
    try:
        rp = RemotePolicy(st.url)
        explicit_nil = rp.act(obs, instr, ivra=[None] * 4)  # each request carries "ivra": nil
        no_key = rp.act(obs, instr)  # no "ivra" key: the server's default arm
        rp.close()
    finally:
        st.stop()
    np.testing.assert_array_equal(explicit_nil, base)
    np.testing.assert_array_equal(no_key, treated)
