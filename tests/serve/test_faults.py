"""Faults and bad input: error frames that name the problem while other clients keep being served, payload
limits, clients that vanish mid-request, server restarts survived by clients, API keys off loopback."""

from __future__ import annotations

import socket
import threading
import time

import msgpack
import numpy as np
import pytest
from serve_helpers import run_openpi, start
from websockets.sync.client import connect

from ivra.policies.remote import RemotePolicy, ServerError, ServerUnavailable
from ivra.policies.sim import SimLatencyPolicy
from ivra.serve import wire
from ivra.serve.policies import ObsSpec
from ivra.serve.server import PolicyServer, ServeOptions, ServerThread

SPEC = ObsSpec(image_shape=(32, 32, 3), action_dim=7)
GOOD = {"observation/image": np.zeros((32, 32, 3), np.uint8), "prompt": "push the block"}


def sim_server(**opts):
    return start(SimLatencyPolicy(fixed_ms=1, per_sample_ms=0), SPEC, **opts)


def raw(url):
    ws = connect(url, compression=None, max_size=None, legacy=True)
    meta = wire.unpackb(ws.recv(timeout=10))
    return ws, meta


BAD = [
    (b"\xc1\x00garbage", "not valid msgpack"),
    ("a text frame", "expected a binary msgpack frame"),
    (wire.packb([1, 2, 3]), "must be a map of observation keys, got list"),
    (wire.packb({"prompt": "x"}), "missing key 'observation/image'"),
    (wire.packb({"observation/image": GOOD["observation/image"]}), "missing key 'prompt'"),
    (wire.packb({**GOOD, "prompt": 3}), "prompt must be a string, got int"),
    (
        wire.packb({**GOOD, "observation/image": np.zeros((32, 31, 3), np.uint8)}),
        "has shape (32, 31, 3), expected 32x32x3",
    ),
    (
        wire.packb({**GOOD, "observation/image": np.zeros((32, 32, 3), np.float32)}),
        "must have dtype uint8, got float32",
    ),
    (wire.packb({**GOOD, "observation/image": [[1, 2]]}), "must be a numpy array"),
    (wire.packb({**GOOD, "ivra": {"lam": 3}}), "ivra: lam must be in [0, 1], got 3"),
    (wire.packb({**GOOD, "ivra": {"colour": 1}}), "ivra: "),
    (wire.packb({**GOOD, "more": -1}), "more must be an integer >= 0"),
    (wire.packb({**GOOD, "episode_id": 1.5}), "episode_id must be a string or an integer, got float 1.5"),
    (wire.packb({**GOOD, "episode_id": True}), "episode_id must be a string or an integer, got bool"),
    (wire.packb({**GOOD, "episode_id": [1]}), "episode_id must be a string or an integer, got list"),
    (
        wire.packb({**GOOD, "reset": "yes"}),
        "reset must be true or false (start a new episode), got str 'yes'",
    ),
    (wire.packb({**GOOD, "reset": 1}), "reset must be true or false"),
    (
        wire.packb({**GOOD, "seed": "7"}),
        "seed must be an integer (the seed of the episode this request starts), got '7'",
    ),
    (wire.packb({**GOOD, "seed": 1.0}), "seed must be an integer"),
    (wire.packb({**GOOD, "seed": False}), "seed must be an integer"),
    (
        wire.packb({**GOOD, "noise_seed": -1}),
        "noise_seed must be an integer in 0..2**63-1 (this request's noise seed), got -1",
    ),
    (wire.packb({**GOOD, "noise_seed": 2**63}), "noise_seed must be an integer in 0..2**63-1"),
    (wire.packb({**GOOD, "noise_seed": "3"}), "noise_seed must be an integer in 0..2**63-1"),
    (
        wire.packb({**GOOD, "noise_seed": 3, "reset": True}),
        "noise_seed seeds one request outside any episode: it cannot be combined with reset or seed",
    ),
    (wire.packb({**GOOD, "noise_seed": 3, "seed": 4}), "cannot be combined with reset or seed"),
    (
        wire.packb({**GOOD, "observation/state": np.zeros((2, 2), np.float32)}),
        "observation/state must be a 1-D",
    ),
    (
        msgpack.packb(
            {
                "observation/image": {
                    b"__ndarray__": True,
                    b"data": b"\x00" * 5,
                    b"dtype": "|u1",
                    b"shape": (32, 32, 3),
                },
                "prompt": "x",
            }
        ),
        "needs 3072 bytes, the frame has 5",
    ),
    (
        msgpack.packb(
            {
                "observation/image": {b"__ndarray__": True, b"data": b"", b"dtype": "|O", b"shape": (0,)},
                "prompt": "x",
            }
        ),
        "dtype object is not allowed",
    ),
]


def test_bad_requests_get_error_frames_and_the_server_keeps_serving():
    st = sim_server()
    try:
        other = RemotePolicy(st.url)
        ws, _ = raw(st.url)
        for frame, needle in BAD:
            ws.send(frame)
            reply = ws.recv(timeout=10)
            assert isinstance(reply, str), f"{needle}: expected a text (error) frame"
            assert needle in reply, (needle, reply)
            # the same connection still serves a good request, and so does another client
            ws.send(wire.packb(GOOD))
            ok = wire.unpackb(ws.recv(timeout=10))
            assert ok["actions"].shape == (1, 7)
        # a refused request neither started nor advanced the connection's episode: one chunk per good request
        assert ok["episode"] == {
            "episode_id": None,
            "seed": 0,
            "chunk": len(BAD) - 1,
            "noise_seed": ok["episode"]["noise_seed"],
        }
        obs = {"image": GOOD["observation/image"]}
        np.testing.assert_array_equal(other.act([obs], ["x"])[0], SimLatencyPolicy.expected(obs, "x"))
        assert st.server.stats["errors"] == len(BAD)
        ws.close()
        other.close()
    finally:
        st.stop()


def test_remote_policy_raises_server_errors_naming_the_problem():
    st = sim_server()
    try:
        rp = RemotePolicy(st.url)
        with pytest.raises(ServerError, match=r"has shape \(8, 8, 3\), expected 32x32x3"):
            rp.act([{"image": np.zeros((8, 8, 3), np.uint8)}], ["x"])
        assert rp.act([{"image": GOOD["observation/image"]}], ["x"]).shape == (1, 7)
        rp.close()
    finally:
        st.stop()


def test_payload_limit_closes_only_that_connection():
    st = sim_server(max_payload_bytes=4096)
    try:
        ws, meta = raw(st.url)
        assert meta["max_payload_bytes"] == 4096
        ws.send(wire.packb({**GOOD, "observation/state": np.zeros(4096, np.float32)}))
        from websockets.exceptions import ConnectionClosed

        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd.code == 1009  # message too big
        rp = RemotePolicy(st.url)
        assert rp.act([{"image": GOOD["observation/image"]}], ["x"]).shape == (1, 7)
        rp.close()
    finally:
        st.stop()


def test_client_vanishing_mid_request_does_not_disturb_others():
    st = start(SimLatencyPolicy(fixed_ms=200, per_sample_ms=0), SPEC, max_wait_ms=1)
    try:
        for _ in range(3):
            ws, _ = raw(st.url)
            for _ in range(4):
                ws.send(wire.packb(GOOD))
            ws.close()  # gone before the answers
        rp = RemotePolicy(st.url)
        obs = {"image": np.full((32, 32, 3), 7, np.uint8)}
        np.testing.assert_array_equal(
            rp.act([obs] * 3, ["y"] * 3), np.stack([SimLatencyPolicy.expected(obs, "y")] * 3)
        )
        rp.close()
    finally:
        st.stop()


def test_client_survives_a_server_restart():
    policy = SimLatencyPolicy(fixed_ms=1, per_sample_ms=0)
    st = start(policy, SPEC)
    port = st.server.port
    rp = RemotePolicy(st.url, reconnect_s=30)
    obs = {"image": GOOD["observation/image"]}
    assert rp.act([obs], ["x"]).shape == (1, 7)
    st.stop()
    holder = {}

    def restart():
        time.sleep(1.0)
        holder["st"] = start(policy, SPEC, port=port)

    t = threading.Thread(target=restart)
    t.start()
    try:
        t0 = time.monotonic()
        np.testing.assert_array_equal(rp.act([obs], ["x"])[0], SimLatencyPolicy.expected(obs, "x"))
        assert rp.reconnects == 1 and time.monotonic() - t0 >= 0.9
    finally:
        t.join()
        rp.close()
        holder["st"].stop()


def test_unreachable_server_raises_after_the_reconnect_budget():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailable, match=f"ws://127.0.0.1:{port} unreachable"):
        RemotePolicy(f"ws://127.0.0.1:{port}", reconnect_s=1.0)
    assert time.monotonic() - t0 < 10


def test_non_loopback_bind_needs_an_api_key():
    with pytest.raises(ValueError, match="non-loopback host '0.0.0.0' without an API key"):
        ServeOptions(host="0.0.0.0")
    ServeOptions(host="0.0.0.0", api_key="k")  # accepted (not bound here: tests stay on loopback)


def test_api_key_is_checked(openpi_py, tmp_path):
    server = PolicyServer(SimLatencyPolicy(fixed_ms=1), ServeOptions(port=0, api_key="s3cret"), SPEC)
    st = ServerThread(server).start()
    try:
        with pytest.raises(ServerUnavailable, match="refused the connection"):
            RemotePolicy(st.url, api_key="wrong")
        with pytest.raises(ServerUnavailable, match="refused the connection"):
            RemotePolicy(st.url)
        rp = RemotePolicy(st.url, api_key="s3cret")
        assert rp.metadata["action_dim"] == 7
        rp.close()
        img = np.full((1, 32, 32, 3), 9, np.uint8)
        got, meta = run_openpi(openpi_py, st.url, tmp_path, img, ["x"], api_key="s3cret")
        np.testing.assert_array_equal(got[0, 0], SimLatencyPolicy.expected({"image": img[0]}, "x"))
    finally:
        st.stop()


class _Picky(SimLatencyPolicy):
    """Fails on any batch holding the prompt 'explode' (a request the policy cannot take)."""

    def predict(self, observations, instructions, seeds=None, ivra=None):
        if "explode" in instructions:
            raise RuntimeError("cannot take 'explode'")
        return super().predict(observations, instructions, seeds, ivra)


def _one_pipelined_batch(policy, prompts):
    """The replies to ``prompts`` sent back to back on one connection (one batch), and the server's stats."""
    st = start(policy, SPEC, max_batch=8, max_wait_ms=200)
    try:
        ws, _ = raw(st.url)
        for i, p in enumerate(prompts):  # pipelined: one batch
            ws.send(wire.packb({**GOOD, "prompt": p, "more": len(prompts) - 1 - i}))
        replies = [ws.recv(timeout=10) for _ in prompts]
        ws.close()
    finally:
        st.stop()
    return replies, dict(st.server.stats)


def test_a_row_the_policy_cannot_take_fails_alone():
    """A batched call that fails is retried row by row: only the bad request gets the error frame."""
    policy = _Picky(fixed_ms=1, per_sample_ms=0)
    prompts = ["a", "explode", "b"]
    replies, _ = _one_pipelined_batch(policy, prompts)
    assert isinstance(replies[1], str) and "policy error: RuntimeError: cannot take 'explode'" in replies[1]
    for i in (0, 2):
        got = wire.unpackb(replies[i])["actions"]
        np.testing.assert_array_equal(
            got[0], SimLatencyPolicy.expected({"image": GOOD["observation/image"]}, prompts[i])
        )
    assert policy.batch_sizes == [1, 1]  # the batch of three failed, then the good rows went alone


class _NaNFor(SimLatencyPolicy):
    """A chunk policy (chunks of 3) whose chunk holds a NaN for one prompt, at step 1."""

    nonfinite_means = "a test policy's NaN"

    def predict(self, observations, instructions, seeds=None, ivra=None):
        out = super().predict(observations, instructions, seeds, ivra)
        for row, text in enumerate(instructions):
            if text == "nan":
                out[row, 1, 2] = np.nan
        return out


def test_a_nonfinite_action_never_leaves_the_server(openpi_py, tmp_path, tabletop_obs, caplog):
    """The shipped policy decoding freely (``decode=free``, as its card was measured) answers NaN for an all-black
    image (its action tokens do not decode). Through the unmodified openpi client, such a request gets an error
    naming the policy, the row and why, is logged and counted in /stats, and the same connection is then served
    finite actions."""
    import logging

    from ivra.serve.policies import load_policy

    policy, spec = load_policy("low", {"decode": "free"})
    black = np.zeros((96, 96, 3), np.uint8)
    images = [black, tabletop_obs[0]["image"], black, tabletop_obs[1]["image"]]
    prompts = [tabletop_obs[i]["instruction"] for i in (0, 0, 0, 1)]
    st = start(policy, spec)
    try:
        with caplog.at_level(logging.ERROR, logger="ivra.serve"):
            got, meta = run_openpi(openpi_py, st.url, tmp_path, images, prompts)
        stats = dict(st.server.stats)
    finally:
        st.stop()
    errors = meta["errors"]
    for i in (0, 2):
        assert "policy error: policy 'minivla-low' answered a non-finite action" in (errors[i] or ""), errors
        assert "row 0 of a batch of 1" in errors[i] and "action tokens could not be decoded" in errors[i]
    for i in (1, 3):
        assert errors[i] is None and np.isfinite(got[i]).all() and got[i].shape == (1, 4)
    assert stats["nonfinite"] == 2 and stats["errors"] == 2 and stats["requests"] == 4
    assert sum("answered a non-finite action" in r.getMessage() for r in caplog.records) == 2


def test_a_nonfinite_row_of_a_batch_is_refused_alone():
    """In a batch of three pipelined requests, only the row whose chunk holds a NaN gets the error (naming the
    row and the chunk step); the others get their whole chunks."""
    replies, stats = _one_pipelined_batch(_NaNFor(fixed_ms=1, per_sample_ms=0, chunk=3), ["a", "nan", "b"])
    assert isinstance(replies[1], str), replies[1]
    assert (
        "answered a non-finite action for this request (row 1 of a batch of 3, step 1 of the chunk, 1 value(s))"
        in replies[1]
    )
    assert "a test policy's NaN" in replies[1] and "nothing was sent to execute" in replies[1]
    for i in (0, 2):
        got = wire.unpackb(replies[i])["actions"]
        assert got.shape == (3, 7) and np.isfinite(got).all()
    assert stats["nonfinite"] == 1
