"""``ivra eval libero`` checks everything it can before the first episode (no simulator needed): the policy is built
as the job builds it and every arm's IVRA setting is set on it once; ws:// policies; random weights said loudly; a
changed configuration named option by option; honest advice after errors; help texts; --ray-resources."""

from __future__ import annotations

import argparse
import json
import socket
import time

import pytest

from ivra.cliargs import UsageError
from ivra.eval import cli as ecli
from ivra.eval.libero import run as lrun


def parser():
    p = argparse.ArgumentParser(prog="ivra")
    ecli.register(p.add_subparsers())
    return p


def libero_args(*extra: str) -> argparse.Namespace:
    return parser().parse_args(["eval", "libero", "--suite", "libero_spatial", *extra])


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """``run_libero`` replaced by a recorder: what the CLI would run, once its checks passed."""
    calls: list[dict] = []
    records: list[dict] = []

    def run_libero(**kw):
        calls.append(kw)
        (tmp_path / "report.md").write_text("# report\n")
        return {
            "out": tmp_path,
            "records": records,
            "report": {"markdown": tmp_path / "report.md", "html": "x"},
        }

    monkeypatch.setattr(lrun, "run_libero", run_libero)
    return calls, records


# -- 1. ws:// policies ---------------------------------------------------------------------------------------------
def test_a_served_policy_passes_the_check(fake_run, capsys):
    from ivra.policies.zero import ZeroPolicy
    from ivra.serve.server import PolicyServer, ServeOptions, ServerThread

    st = ServerThread(PolicyServer(ZeroPolicy(), ServeOptions(port=0))).start()
    try:
        args = libero_args("--policy", st.url, "--ab", "--ivra", "layer=2,lam=0.3", "--executor", "local")
        assert args.func(args) == 0, capsys.readouterr().err
    finally:
        st.stop()
    (call,) = fake_run[0]
    assert call["policy"] == st.url and call["arms"]["ivra"]["layer"] == 2
    assert call["policy_instance"] is None  # local workers open their own connections


@pytest.mark.parametrize(
    "url, message",
    [
        ("ws://127.0.0.1", "no port"),
        ("ws://:8000", "no host"),
        ("wss://127.0.0.1:99999", "Port out of range"),
    ],
)
def test_a_malformed_server_url_is_one_line(url, message):
    with pytest.raises(UsageError, match=message) as err:
        ecli.check_policy(url, {}, {"baseline": None})
    assert "\n" not in str(err.value) and "ws://HOST:PORT" in str(err.value)


def test_an_unreachable_server_is_said_before_any_episode(fake_run):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = libero_args("--policy", f"ws://127.0.0.1:{port}", "--ab", "--ivra", "layer=2,lam=0.3")
    t0 = time.monotonic()
    with pytest.raises(UsageError, match="unreachable") as err:
        args.func(args)
    assert time.monotonic() - t0 < 10 and "ivra serve" in str(err.value) and "\n" not in str(err.value)
    assert not fake_run[0]


# -- 2. every IVRA setting against the actual policy -------------------------------------------------------------
def test_tiny_vla_layer_out_of_range_is_refused_up_front(fake_run):
    args = libero_args("--policy", "tiny-vla", "--ab", "--ivra", "layer=8,lam=0.3")
    with pytest.raises(
        UsageError, match=r"IVRA setting layer=8, lam=0.3 \(arm ivra\): layer 8 is out of range"
    ):
        args.func(args)
    assert not fake_run[0]


def test_a_module_class_policy_is_built_and_its_ivra_setting_checked(fake_run):
    """Before: only the import was checked; the baseline arm ran, then every IVRA unit errored."""
    args = libero_args("--policy", "ivra.policies.vla:TinyVLAPolicy", "--ab", "--ivra", "layer=99")
    with pytest.raises(UsageError, match=r"\(arm ivra\): layer 99 is out of range"):
        args.func(args)
    assert not fake_run[0]
    args = libero_args("--policy", "ivra.policies.vla:TinyVLAPolicy", "--policy-kwargs", "bogus=1")
    with pytest.raises(UsageError, match="--policy-kwargs for ivra.policies.vla:TinyVLAPolicy: .*bogus"):
        args.func(args)


def test_flower_policy_setting_checked_and_the_policy_reused_inline(fake_run, capsys):
    name = "ivra.policies.flower:FlowerPolicy"
    args = libero_args("--policy", name, "--policy-kwargs", "model=tiny", "--ab", "--ivra", "layer=20")
    with pytest.raises(UsageError, match=r"layer=20, lam=0.3 \(arm ivra\): layer 20 is out of range"):
        args.func(args)
    args = libero_args(
        "--policy",
        name,
        "--policy-kwargs",
        "model=tiny",
        "--ab",
        "--ivra",
        "preset=flower",
        "--executor",
        "inline",
    )
    assert args.func(args) == 0
    (call,) = fake_run[0]
    assert type(call["policy_instance"]).__name__ == "FlowerPolicy"  # loaded once, runs the units
    assert call["policy_instance"].ivra_handle is None  # the check left IVRA detached


# -- 4. random weights: refused unless asked for, and then said loudly -------------------------------------------
def test_flower_without_a_model_is_refused_naming_what_is_expected(fake_run):
    args = libero_args("--policy", "ivra.policies.flower:FlowerPolicy", "--ab", "--ivra", "preset=flower")
    with pytest.raises(UsageError, match="needs a model: model=tiny for the RANDOM-weight rebuild") as err:
        args.func(args)
    assert "\n" not in str(err.value) and not fake_run[0]


def test_random_weights_are_said_in_the_output(fake_run, capsys):
    args = libero_args(
        "--policy", "ivra.policies.flower:FlowerPolicy", "--policy-kwargs", "model=tiny", "--ab", "--ivra", "preset=flower"
    )  # fmt: skip
    assert args.func(args) == 0
    err = capsys.readouterr().err
    assert "WARNING: policy ivra.policies.flower:FlowerPolicy runs RANDOM WEIGHTS (model=tiny" in err
    (call,) = fake_run[0]
    assert "random weights" in call["random_weights"] and call["policy_instance"] is None  # local: freed here


def _fake_libero(monkeypatch):
    """run_libero without the simulator: no config check, no renderer probe, units 'executed' to nothing."""
    from ivra.eval.libero import renderer

    monkeypatch.setattr(lrun, "ensure_config", lambda: None)
    monkeypatch.setattr(lrun, "git_revision", lambda: None)
    monkeypatch.setattr(renderer, "choose", lambda: ("egl", {}))
    monkeypatch.setattr(lrun, "execute", lambda *a, **k: [])


def test_random_weights_in_the_manifest_and_the_report(monkeypatch, tmp_path):
    _fake_libero(monkeypatch)

    class Random:
        random_weights = "model=tiny: random"

    res = lrun.run_libero(
        "libero_spatial", policy="x:Y", tasks=[0], init_states=[0], out=tmp_path / "a", executor="inline",
        policy_instance=Random(), progress=False,
    )  # fmt: skip
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["random_weights"] == "model=tiny: random"
    assert manifest["deviations"][0].startswith("RANDOM WEIGHTS: model=tiny: random")
    assert "RANDOM WEIGHTS: model=tiny: random" in res["report"]["markdown"].read_text()
    lrun.run_libero("libero_spatial", tasks=[0], init_states=[0], out=tmp_path / "b", progress=False)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["random_weights"] is None


# -- 3. a changed configuration names what changed ---------------------------------------------------------------
def test_a_changed_configuration_names_the_options_that_differ(monkeypatch, tmp_path):
    _fake_libero(monkeypatch)
    common = dict(suite="libero_spatial", tasks=[0], init_states=[0], out=tmp_path, progress=False)
    lrun.run_libero(arms={"baseline": None, "ivra": {"layer": 8, "lam": 0.3}}, **common)
    lrun.run_libero(arms={"baseline": None, "ivra": {"layer": 8, "lam": 0.3}}, **common)  # same: resumes
    with pytest.raises(UsageError) as err:
        lrun.run_libero(arms={"baseline": None, "ivra": {"layer": 2, "lam": 0.3}}, resolution=128, **common)
    msg = str(err.value)
    assert "different configuration: ivra arm: layer 8 -> 2; --resolution: 256 -> 128;" in msg
    assert (
        "rerun with its original options" in msg and "pass another --out" in msg and "fingerprint" not in msg
    )


def test_a_manifest_without_its_configuration_keeps_the_fingerprint_wording(monkeypatch, tmp_path):
    _fake_libero(monkeypatch)
    (tmp_path / "manifest.json").write_text(json.dumps({"fingerprint": "0123456789abcdef"}))
    with pytest.raises(
        UsageError, match=r"different configuration \(fingerprint 0123456789abcdef != \w+\); to resume"
    ):
        lrun.run_libero("libero_spatial", tasks=[0], init_states=[0], out=tmp_path, progress=False)


def test_config_changes_per_option():
    from ivra.eval.libero.job import LiberoConfig

    old = {
        "config": LiberoConfig(arms={"baseline": None, "ivra": {"layer": 8}}).to_dict(),
        "tasks": [0, 1],
        "seed": 0,
    }
    new = {
        "config": LiberoConfig(
            policy_kwargs={"model": "tiny"}, arms={"ivra": {"layer": 8}}, max_steps=30
        ).to_dict(),
        "tasks": [0, 1],
        "seed": 3,
    }
    assert lrun.config_changes(old, new) == [
        '--policy-kwargs: model absent -> "tiny"',
        "arms: baseline, ivra -> ivra (--ab / --ivra)",
        "--max-steps: default -> 30",
        "--seed: 0 -> 3",
    ]


def test_the_advice_after_errors_is_honest(fake_run, capsys):
    fake_run[1].extend(
        [
            {"key": "t0/baseline", "unit": {"arm": "baseline"}, "status": "ok"},
            {"key": "t0/ivra", "unit": {"arm": "ivra"}, "status": "error", "error": "IVRAError: boom"},
        ]
    )
    args = libero_args("--policy", "zero", "--ab", "--ivra", "layer=2")
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "arm ivra: 1 of 1 unit(s) failed; first (t0/ivra): IVRAError: boom" in err
    assert "rerun the same command with --rerun-errors" in err  # for a cause outside the command
    assert "the corrected command is another configuration: run it with another --out" in err
    assert "fix the cause, then rerun" not in err


# -- 5. help texts and --ray-resources ---------------------------------------------------------------------------
def test_help_texts():
    from ivra.config import PRESETS

    p = parser()
    lib = p._subparsers._group_actions[0].choices["eval"]._subparsers._group_actions[0].choices["libero"]
    helps = {a.dest: a.help for a in lib._actions}
    for dest in ("wait_steps", "executor", "retries", "workers", "ivra", "ray_resources"):
        assert helps[dest], dest
    assert "preset=NAME[,lam=..]" in helps["ivra"]
    assert all(name in helps["ivra"] for name in PRESETS)
    text = lib.format_help()  # renders (no stray % in a help string)
    assert "--wait-steps" in text and "preset=NAME" in text


@pytest.mark.parametrize(
    "spec, message",
    [
        ("num_gpus=abc", "num_gpus=abc: expected a number >= 0"),
        ("num_cpus=-1", "num_cpus=-1: expected a number >= 0"),
        ("max_restarts=1.5", "max_restarts=1.5: expected an integer >= -1"),
        ("gpus=1", "unknown Ray actor option 'gpus'"),
    ],
)
def test_bad_ray_resources_are_one_line(spec, message, capsys):
    with pytest.raises(SystemExit) as exc:
        libero_args("--executor", "ray", "--ray-resources", spec)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --ray-resources" in err and message in err


def test_ray_resources_values():
    assert ecli.ray_resources("num_gpus=0.25,num_cpus=1") == {"num_gpus": 0.25, "num_cpus": 1}
    assert ecli.ray_resources("resources.trt=2,accelerator_type=A100") == {
        "resources": {"trt": 2},
        "accelerator_type": "A100",
    }
