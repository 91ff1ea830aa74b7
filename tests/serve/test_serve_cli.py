"""``ivra serve`` and its bad-input answers from the command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from serve_procs import ROOT, serve_process

from ivra.serve.client import RemotePolicy
from ivra.serve.policies import SimLatencyPolicy


def test_ivra_serve_command_serves_and_stops_on_sigterm():
    with serve_process(sys.executable, "--policy", "sim:fixed_ms=1,per_sample_ms=0", "--max-batch", "4") as (
        url,
        proc,
        lines,
    ):
        rp = RemotePolicy(url)
        assert rp.metadata["policy"] == "sim" and rp.metadata["max_batch"] == 4
        obs = [{"image": np.full((8, 8, 3), i, np.uint8)} for i in range(3)]
        np.testing.assert_array_equal(
            rp.act(obs, ["go"] * 3), np.stack([SimLatencyPolicy.expected(o, "go") for o in obs])
        )
        rp.close()
    assert proc.returncode == 0, "".join(lines)
    assert "stopped after 3 requests" in "".join(lines)


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
        (["serve", "--policy", "lerobot:smolvla"], "lerobot:smolvla cannot be served yet"),
        (
            ["serve", "--policy", "tiny-vla", "--policy-kwargs", "temperature=0.5"],
            "serve it with temperature=0",
        ),
    ]
    for args, needle in cases:
        res = run_cli(*args)
        assert res.returncode != 0, args
        assert needle in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
