"""A policy of another environment says so first (issue 23 item 3): which environment runs it and how to make it,
before anything about its options (lerobot's path=, a wrong keyword) in every verb that builds policies."""

from __future__ import annotations

import importlib.util

import pytest

from ivra.cli import main
from ivra.policies.registry import build_policy, environment_of, missing_environment

CASES = [
    ("openvla", "openvla", "timm"),
    ("openvla-oft", "openvla", "timm"),
    ("lerobot:smolvla", "lerobot", "lerobot"),
    ("lerobot:pi05", "lerobot", "lerobot"),
]


def test_each_policy_names_its_environment():
    assert [environment_of(name) for name, _, _ in CASES] == [env for _, env, _ in CASES]
    assert (
        environment_of("flower") is None
        and environment_of("tiny-vla") is None
        and environment_of("low") is None
    )


@pytest.mark.parametrize("name,env,module", CASES)
@pytest.mark.parametrize("verb", ["eval", "serve"])
def test_the_environment_comes_first(name, env, module, verb, capsys):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed: this is the {env} environment")
    argv = {
        "eval": ["eval", "libero", "--suite", "libero_spatial", "--policy", name],
        "serve": ["serve", "--policy", name, "--port", "0"],
    }[verb]
    assert main([*argv, "--policy-kwargs", "no_such_option=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ivra {'eval libero' if verb == 'eval' else 'serve'}: error: --policy {name} runs in the "
                          f"{env} environment"), err  # fmt: skip
    assert f"not this one ({module} is not installed here)" in err
    assert f"`.venv/bin/nox -s {env} --install-only` (creates .nox/{env})" in err
    assert "path=" not in err and "no_such_option" not in err and len(err.splitlines()) == 1


def test_the_library_raises_the_same_sentence():
    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed")
    with pytest.raises(ImportError) as err:
        build_policy("openvla")
    assert str(err.value) == missing_environment("openvla")
