"""One arm check for every verb (:mod:`ivra.policies.check`): demo/sweep/viz, eval libero and serve set each IVRA arm
on the loaded policy the same way, and differ only in how the message names the arm."""

from __future__ import annotations

import numpy as np
import pytest

from ivra.cliargs import UsageError
from ivra.policies.check import check_arms


class Picky:
    """A policy whose own ``set_ivra`` refuses lam > 0.5 (and whose ``model`` would take anything)."""

    name = "picky"
    chunk_length = execute_steps = 1

    def __init__(self, **kwargs):
        self.model = object()
        self.calls = []

    def set_ivra(self, cfg):
        self.calls.append(cfg)
        if cfg and cfg["lam"] > 0.5:
            raise ValueError(f"lam {cfg['lam']} is too strong for this policy")

    def predict(self, observations, instructions, seeds=None, ivra=None):
        return np.zeros((len(observations), 1, 7))


class Inert:
    """A policy that has no way to take IVRA settings (no set_ivra, no model)."""

    name = "inert"
    chunk_length = execute_steps = 1

    def __init__(self, **kwargs):
        pass

    def predict(self, observations, instructions, seeds=None, ivra=None):
        return np.zeros((len(observations), 1, 7))


def _verbs():
    """Each verb's arm check, as (name, call(policy, cfg))."""
    from ivra.eval import cli as ecli
    from ivra.experiment import cli as xcli
    from ivra.serve import cli as scli

    return {
        "demo": lambda pol, cfg: xcli.check_arms(pol, {"ivra": cfg}),
        "eval": lambda pol, cfg: ecli.check_policy(f"{__name__}:{type(pol).__name__}", {}, {"ivra": cfg}),
        "serve": lambda pol, cfg: scli.check_arm(pol, cfg, "default arm"),
    }


@pytest.mark.parametrize("verb", ["demo", "eval", "serve"])
def test_every_verb_sets_the_arm_the_way_its_episodes_will(verb):
    """The policy's own set_ivra decides (not an attach to its model), and the arm is unset after."""
    pol = Picky()
    call = _verbs()[verb]
    with pytest.raises(UsageError, match=r"layer=0, lam=0.9 .*: lam 0.9 is too strong for this policy"):
        call(pol, {"layer": 0, "lam": 0.9})
    call(pol, {"layer": 0, "lam": 0.3})
    if verb != "eval":  # eval builds its own instance
        assert pol.calls[-2:] == [{"layer": 0, "lam": 0.3}, None]


@pytest.mark.parametrize("verb", ["demo", "eval", "serve"])
def test_every_verb_refuses_an_arm_a_policy_cannot_take(verb):
    with pytest.raises(UsageError, match=r"(?i)--policy \S*inert cannot take IVRA settings") as err:
        _verbs()[verb](Inert(), {"layer": 0, "lam": 0.3})
    assert "layer=0, lam=0.3" in str(err.value)


def test_the_message_names_the_arm_as_each_verb_does():
    pol = Picky()
    with pytest.raises(UsageError) as err:
        check_arms(pol, {"ivra": {"layer": 0, "lam": 2.0}})
    assert str(err.value).startswith("IVRA setting layer=0, lam=2.0 (arm ivra): lam must be in [0, 1]")
    assert pol.calls == []  # validated before the policy sees it
    from ivra.serve.cli import check_arm

    with pytest.raises(UsageError) as err:
        check_arm(pol, {"layer": 0, "lam": 0.9}, "treatment arm")
    assert str(err.value) == "--ivra layer=0, lam=0.9 (treatment arm): lam 0.9 is too strong for this policy"


def test_the_shipped_policy_is_left_without_ivra():
    from ivra.minivla.policy import MiniVLAPolicy

    pol = MiniVLAPolicy("low")
    check_arms(pol, {"baseline": None, "ivra": {"layer": 1, "lam": 0.3}})
    assert pol.ivra_handle is None and pol.ivra_config is None
    with pytest.raises(UsageError, match=r"\(arm ivra\): layer 99 is out of range: the model has 4"):
        check_arms(pol, {"ivra": {"layer": 99, "lam": 0.3}})
    assert pol.ivra_handle is None
