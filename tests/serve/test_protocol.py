"""Protocol parity: the unmodified PyPI openpi-client (its own environment, numpy 1.x) gets from ``ivra serve``
exactly the actions the policy computes in-process, for many concurrent clients."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from serve_helpers import run_openpi, start


def in_process(policy, obs):
    return np.stack([policy.act([o], [o["instruction"]])[0] for o in obs])


@pytest.mark.parametrize("clients", [1, 6])
def test_openpi_client_gets_in_process_actions(openpi_py, low_policy, tabletop_obs, tmp_path, clients):
    policy, spec = low_policy
    want = in_process(policy, tabletop_obs)
    st = start(policy, spec, max_batch=8, max_wait_ms=20)
    try:
        got, meta = run_openpi(
            openpi_py,
            st.url,
            tmp_path,
            [o["image"] for o in tabletop_obs],
            [o["instruction"] for o in tabletop_obs],
            clients=clients,
        )
        stats = dict(st.server.stats)
    finally:
        st.stop()
    assert meta["errors"] == [None] * len(tabletop_obs)
    assert meta["server"]["policy"] == "minivla-low"
    assert meta["server"]["action_dim"] == 4 and meta["server"]["observation"]["image_shape"] == [96, 96, 3]
    assert (meta["server"]["action_horizon"], meta["server"]["execute_steps"]) == (
        1,
        1,
    )  # single-step: (1, D)
    assert got.shape == (len(tabletop_obs), 1, 4)  # openpi's action chunk convention: (horizon, action_dim)
    np.testing.assert_array_equal(got[:, 0], want)
    assert stats["requests"] == len(tabletop_obs) and stats["errors"] == 0
    if clients > 1:  # concurrent clients were served together
        assert max(stats["batch_sizes"]) > 1, stats


def test_health_check_and_metadata(low_policy):
    policy, spec = low_policy
    st = start(policy, spec)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{st.server.port}/healthz", timeout=10) as r:
            assert r.status == 200 and r.read() == b"OK\n"
        from ivra.policies.remote import RemotePolicy

        rp = RemotePolicy(st.url)
        assert rp.metadata["protocol"] == "openpi-websocket-msgpack-numpy"
        assert rp.metadata["default_ivra"] is None and rp.image_size == 96
        rp.close()
    finally:
        st.stop()
