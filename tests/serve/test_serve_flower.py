"""FLOWER (the tiny rebuild, core environment) behind ``ivra serve``: whole chunks of act_window_size actions, the
noise seeded per row, equal to the in-process policy; several rows in one batched server call."""

from __future__ import annotations

import numpy as np
from serve_helpers import start

from ivra.policies.remote import RemotePolicy
from ivra.serve.policies import load_policy


def _obs(k: int) -> dict:
    g = np.random.default_rng(k)
    return {
        "image": g.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "wrist_image": g.integers(0, 256, (64, 64, 3), dtype=np.uint8),
    }


def test_served_flower_chunks_equal_in_process():
    policy, spec = load_policy("flower", {"model": "tiny", "multistep": 5})
    obs, text, seeds = [_obs(0), _obs(1)], ["open the drawer", "close the drawer"], [3, 4]
    want = policy.predict(obs, text, seeds)
    assert want.shape == (2, policy.chunk_length, 7) and policy.execute_steps == 5
    st = start(policy, spec, max_wait_ms=200.0)
    try:
        rp = RemotePolicy(st.url)
        assert (rp.chunk_length, rp.execute_steps) == (policy.chunk_length, 5)
        got = rp.predict(obs, text, seeds)  # pipelined: one batch of 2 on the server
        rp.close()
    finally:
        st.stop()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got[0], got[1])
    assert 2 in st.server.stats["batch_sizes"]
