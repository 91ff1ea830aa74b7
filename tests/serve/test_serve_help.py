"""``ivra serve`` / ``ivra trials`` help says what each option is for, including the defaults a user relies on
(the shipped policies, the blind A/B folder); a bad port and a folder without a blind A/B are one-line errors."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
from serve_procs import ROOT

from ivra.cli import build_parser
from ivra.minivla.policy import REGIMES
from ivra.serve.blind import DEFAULT_DIR


def _sub(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def _helps(name: str) -> dict[str, str]:
    return {
        (a.option_strings[0] if a.option_strings else a.dest): a.help or ""
        for a in _sub(name)._actions
        if not isinstance(a, argparse._HelpAction)
    }


def run_cli(*args, cwd=None):
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "ivra.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize("verb", ["serve", "trials", "bench"])
def test_every_option_says_what_it_is_for(verb):
    helps = _helps(verb)
    assert not [k for k, v in helps.items() if len(v.split()) < 3], helps
    text = _sub(verb).format_help()  # a stray % in a help string would raise here
    assert text.startswith(f"usage: ivra {verb}")


def test_serve_policy_help_names_every_shipped_regime():
    policy_help = _helps("serve")["--policy"]
    for regime in REGIMES:
        assert f" {regime} " in f" {policy_help.replace('|', ' ')} ", (regime, policy_help)
    assert "preset=" in _helps("serve")["--ivra"]


def test_serve_and_trials_state_the_same_blind_ab_default():
    assert DEFAULT_DIR == "runs/blind"
    assert _sub("serve").get_default("ab_dir") == _sub("trials").get_default("ab_dir") == DEFAULT_DIR
    assert f"(default {DEFAULT_DIR})" in _helps("serve")["--ab-dir"]
    assert f"(default {DEFAULT_DIR})" in _helps("trials")["ab_dir"]


@pytest.mark.parametrize("port", ["70000", "65536", "-1", "http"])
def test_out_of_range_port_is_a_one_line_usage_error(port):
    res = run_cli("serve", "--policy", "sim", "--port", port)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "argument --port" in res.stderr and "65535" in res.stderr


@pytest.mark.parametrize("extra", [[], ["--report"]])
def test_trials_without_a_blind_ab_folder_names_the_folder_and_the_flag(tmp_path, extra):
    res = run_cli("trials", *extra, cwd=tmp_path)  # bare: the default folder, absent here
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert line.startswith(f"ivra trials: error: {DEFAULT_DIR} is not a blind A/B folder"), line
    assert "--ab-dir" in line and "ivra serve --ab blind" in line, line
    # a folder that exists but holds something else answers the same way, naming that folder
    other = tmp_path / "runs" / "robot"
    other.mkdir(parents=True)
    res = run_cli("trials", str(other), *extra)
    assert res.returncode == 2 and f"{other} is not a blind A/B folder" in res.stderr, res.stderr
