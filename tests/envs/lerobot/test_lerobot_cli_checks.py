"""``ivra eval libero --policy lerobot:smolvla`` checks each arm's IVRA setting against the loaded checkpoint before
the first episode: a layer the policy does not have is one line (exit 2), not a baseline arm that runs and an IVRA
arm whose every unit errors. No simulator needed: the check happens before LIBERO is touched."""

from __future__ import annotations

import argparse

import pytest

from ivra.cliargs import UsageError
from ivra.eval import cli as ecli
from ivra.eval.libero import run as lrun
from ivra.tiny import lerobot as tl


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tl.save_checkpoint(tmp_path_factory.mktemp("smolvla"))  # 4 VLM layers


def args_for(folder, ivra: str, executor: str = "local") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ivra")
    ecli.register(p.add_subparsers())
    return p.parse_args(
        ["eval", "libero", "--suite", "libero_spatial", "--tasks", "0", "--init-states", "0",
         "--policy", "lerobot:smolvla", "--policy-kwargs", f"path={folder},tokenizer={folder / 'smolvlm'}",
         "--ab", "--ivra", ivra, "--executor", executor]
    )  # fmt: skip


def test_a_layer_the_checkpoint_lacks_is_refused_before_any_episode(checkpoint, monkeypatch):
    calls = []
    monkeypatch.setattr(lrun, "run_libero", lambda **kw: calls.append(kw))
    args = args_for(checkpoint, "layer=8,lam=0.3")
    with pytest.raises(
        UsageError, match=r"IVRA setting layer=8, lam=0.3 \(arm ivra\): layer 8 is out of range"
    ):
        args.func(args)
    assert not calls  # no episode ran


def test_a_valid_setting_passes_and_inline_reuses_the_loaded_policy(checkpoint, monkeypatch, tmp_path):
    calls = []

    def run_libero(**kw):
        calls.append(kw)
        (tmp_path / "report.md").write_text("# report\n")
        return {"out": tmp_path, "records": [], "report": {"markdown": tmp_path / "report.md", "html": "x"}}

    monkeypatch.setattr(lrun, "run_libero", run_libero)
    args = args_for(checkpoint, "layer=1,lam=0.5", executor="inline")
    assert args.func(args) == 0
    (call,) = calls
    pol = call["policy_instance"]
    assert type(pol).__name__ == "LerobotPolicy" and pol.ivra_handle is None  # checked, left detached
    assert call["random_weights"] is None  # a checkpoint folder: its weights are what they are
