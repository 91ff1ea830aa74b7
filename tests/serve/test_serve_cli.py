"""``ivra serve`` and its bad-input answers from the command line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
from serve_procs import ROOT, serve_process

from ivra.policies.remote import RemotePolicy
from ivra.policies.sim import SimLatencyPolicy


def test_ivra_serve_command_serves_and_stops_on_sigterm():
    with serve_process(sys.executable, "--policy", "sim:fixed_ms=1,per_sample_ms=0", "--max-batch", "4") as (
        url,
        proc,
        lines,
    ):
        rp = RemotePolicy(url)
        assert rp.metadata["policy"] == "sim" and rp.metadata["max_batch"] == 4
        assert (rp.chunk_length, rp.execute_steps) == (1, 1)  # a single-step policy answers (1, D)
        obs = [{"image": np.full((8, 8, 3), i, np.uint8)} for i in range(3)]
        np.testing.assert_array_equal(
            rp.act(obs, ["go"] * 3), np.stack([SimLatencyPolicy.expected(o, "go") for o in obs])
        )
        rp.close()
    assert proc.returncode == 0, "".join(lines)
    assert "stopped after 3 requests" in "".join(lines)


def test_the_start_line_is_printed_once_and_health_checks_are_not_logged():
    import time
    import urllib.request

    with serve_process(sys.executable, "--policy", "sim:fixed_ms=0,per_sample_ms=0") as (url, proc, lines):
        health = url.replace("ws://", "http://") + "/healthz"
        for _ in range(3):
            assert urllib.request.urlopen(health, timeout=10).read().strip() == b"OK"
        RemotePolicy(url).close()
        time.sleep(0.5)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert sum(f" on {url}" in line for line in lines) == 1, out
    assert "HTTP response" not in out and "connection closed" not in out and "server listening" not in out, (
        out
    )


def run_cli(*args):
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "ivra.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_bad_arguments_are_one_line_errors():
    cases = [
        (["serve", "--policy", "nonsense"], "--policy nonsense: unknown policy 'nonsense'"),
        (["serve", "--policy", "sim", "--host", "0.0.0.0"], "non-loopback host '0.0.0.0' without an API key"),
        (["serve", "--policy", "sim", "--ivra", "lam=2"], "argument --ivra: lam must be in [0, 1]"),
        (
            ["serve", "--policy", "sim", "--max-batch", "0"],
            "argument --max-batch: expected an integer > 0, got '0'",
        ),
        (["serve", "--policy", "sim", "--max-wait-ms", "-1"], "max_wait_ms must be >= 0, got -1.0"),
        (["trials", "/nonexistent/ab"], "not a blind A/B folder"),
        (["serve", "--policy", "sim", "--ab", "blind"], "--ab blind needs --ivra"),
        (["serve", "--policy", "sim:fixed_ms=-1"], "latencies must be >= 0"),
        (["serve", "--policy", "ws://127.0.0.1:9"], "is a policy server already: point the clients at it"),
        (["serve", "--policy", "sim:chunk=4,execute=5"], "need chunk >= 1 and execute in 1..chunk"),
        (
            ["serve", "--policy", "sim", "--roboarena-action-space", "joint_position"],
            "--roboarena-action-space: RoboArena action space joint_position takes 8-D actions, the policy answers 7-D",
        ),
        (["serve", "--policy", "sim", "--episode-seed", "-1"], "argument --episode-seed"),
    ]
    if (
        importlib.util.find_spec("lerobot") is None
    ):  # the core environment: lerobot's policies run in their own
        cases.append(
            (
                ["serve", "--policy", "lerobot:smolvla"],
                "--policy lerobot:smolvla runs in the lerobot environment (lerobot 0.6.1, Python 3.12), not this one",
            )
        )
    for args, needle in cases:
        res = run_cli(*args)
        assert res.returncode != 0, args
        assert needle in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_default_arm_is_served_and_said():
    """`ivra serve --ivra ...` (no blind A/B) used to die right after starting: its banner concatenated a dict."""
    import time

    with serve_process(sys.executable, "--policy", "low", "--ivra", "layer=0,lam=0.3") as (url, proc, lines):
        deadline = time.monotonic() + 60
        while not any("default arm IVRA layer=0, lam=0.3" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        rp = RemotePolicy(url)
        assert rp.metadata["default_ivra"]["layer"] == 0 and rp.metadata["default_ivra"]["lam"] == 0.3
        rp.close()
    assert proc.returncode == 0, "".join(lines)


def test_an_arm_the_model_cannot_take_is_refused_before_serving(tmp_path):
    """The server's own arm is attached to the loaded policy once at start: a layer the model lacks is one line,
    exit 2, and a blind A/B folder is not created for it."""
    for policy in ("low", "tiny-vla"):
        res = run_cli("serve", "--policy", policy, "--port", "0", "--ivra", "layer=99,lam=0.3")
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip() == (
            "ivra serve: error: --ivra layer=99, lam=0.3 (default arm): layer 99 is out of range: the model has 4, "
            "valid are -4..3"
        )
    folder = tmp_path / "ab"
    res = run_cli(
        "serve", "--policy", "low", "--ab", "blind", "--ab-dir", str(folder), "--ivra", "layer=9,lam=0.1"
    )
    assert res.returncode == 2 and "(treatment arm): layer 9 is out of range" in res.stderr, res.stderr
    assert not folder.exists()
