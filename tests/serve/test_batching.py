"""Dynamic batching: concurrent clients share policy calls (bounded by --max-batch), every answer goes back to
the client that asked, one policy object serves them all."""

from __future__ import annotations

import threading

import numpy as np
from serve_helpers import start

from ivra.policies.remote import RemotePolicy
from ivra.policies.sim import SimLatencyPolicy
from ivra.serve.policies import ObsSpec

SPEC = ObsSpec(image_shape=(16, 16, 3), action_dim=7)


def test_concurrent_clients_are_batched_and_answered_correctly():
    policy = SimLatencyPolicy(fixed_ms=30, per_sample_ms=1)
    st = start(policy, SPEC, max_batch=4, max_wait_ms=10)
    n_clients, steps = 10, 5
    results, errors = {}, []
    barrier = threading.Barrier(n_clients)

    def client(k):
        try:
            rp = RemotePolicy(st.url)
            barrier.wait(30)
            got = []
            for step in range(steps):
                obs = {"image": np.full((16, 16, 3), 10 * k + step, np.uint8)}
                got.append((rp.act([obs], [f"task {k}"])[0], SimLatencyPolicy.expected(obs, f"task {k}")))
            results[k] = got
            rp.close()
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        st.stop()
    assert not errors, errors
    for k in range(n_clients):
        for got, want in results[k]:
            np.testing.assert_array_equal(got, want)
    total = n_clients * steps
    assert sum(policy.batch_sizes) == total
    assert max(policy.batch_sizes) == 4  # the cap holds, and was reached
    assert policy.calls <= total / 2, policy.batch_sizes  # far fewer calls than requests


def test_max_batch_one_means_no_batching():
    policy = SimLatencyPolicy(fixed_ms=1, per_sample_ms=0)
    st = start(policy, SPEC, max_batch=1, max_wait_ms=0)
    try:
        rp = RemotePolicy(st.url)
        obs = [{"image": np.full((16, 16, 3), i, np.uint8)} for i in range(5)]
        got = rp.act(obs, ["x"] * 5)  # pipelined, still one request per call
        rp.close()
    finally:
        st.stop()
    np.testing.assert_array_equal(got, np.stack([SimLatencyPolicy.expected(o, "x") for o in obs]))
    assert policy.batch_sizes == [1] * 5
