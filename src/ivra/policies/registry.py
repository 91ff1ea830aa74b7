"""The one place that turns a policy name into a policy, for ``ivra demo``, ``ivra eval`` and ``ivra serve``.

=====================================  =================================================================  ==========
name                                   policy                                                             H / exec
=====================================  =================================================================  ==========
``zero``                               :class:`~ivra.policies.zero.ZeroPolicy` (no motion)                1 / 1
``tiny-vla``                           :class:`~ivra.policies.vla.TinyVLAPolicy` (random-weight LLaVA)    1 / 1
``low`` | ``full`` | a run directory   :class:`~ivra.minivla.policy.MiniVLAPolicy` (tabletop)             1 / 1
``sim[:k=v,...]``                      :class:`~ivra.policies.sim.SimLatencyPolicy` (latency stand-in)    chunk= / execute=
``lerobot:smolvla|pi0|pi05``           :class:`~ivra.policies.lerobot.LerobotPolicy` (lerobot env)        chunk_size / n_action_steps
``openvla``                            :class:`~ivra.policies.openvla.OpenVLAPolicy` (openvla env)        1 / 1
``openvla-oft``                        :class:`~ivra.policies.openvla.OpenVLAOFTPolicy` (openvla env)     8 / open_loop_steps
``flower``                             :class:`~ivra.policies.flower.FlowerPolicy` (flower env)           act_window_size / multistep
``ws://HOST:PORT``                     :class:`~ivra.policies.remote.RemotePolicy` (``ivra serve``)       the server's
``package.module:Class``               any class following :mod:`ivra.policies.base`                    its own
=====================================  =================================================================  ==========

``kwargs`` go to the constructor (``--policy-kwargs k=v,...`` on the command line). Mistakes raise ``ValueError``
(an unknown name), ``TypeError`` (an unknown keyword) or ``ImportError`` (a policy whose environment this is not).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

NAMES = (
    "zero",
    "tiny-vla",
    "low",
    "full",
    "sim",
    "lerobot:smolvla",
    "lerobot:pi0",
    "lerobot:pi05",
    "openvla",
    "openvla-oft",
    "flower",
)
EXPECTED = (
    "zero | tiny-vla | low | full | a training run directory | sim[:k=v,..] | lerobot:smolvla|pi0|pi05 | openvla | "
    "openvla-oft | flower | ws://HOST:PORT | package.module:Class"
)


#: policies that run only in their own environment: environment -> (a module it has and this one may lack, how to
#: make it); the core environment runs every other name
ENVIRONMENTS = {
    "lerobot": ("lerobot", "lerobot 0.6.1, Python 3.12"),
    "openvla": ("timm", "timm 0.9.16, transformers 4.40.1, Python 3.11"),
}


def environment_of(name: str) -> str | None:
    """The environment a policy name runs in when it is not the core one (``lerobot``, ``openvla``), else None."""
    name = str(name)
    if name.startswith("lerobot:"):
        return "lerobot"
    if name in ("openvla", "openvla-oft"):
        return "openvla"
    return None


def missing_environment(name: str, serving: bool = False) -> str | None:
    """Why ``name`` cannot run in this Python environment, and how to make the one it runs in (a sentence), or None
    when it can (or runs anywhere). Checked before anything else about the policy (its options included).
    ``serving``: for ``ivra serve`` (no advice to serve it)."""
    import importlib.util

    env = environment_of(name)
    if env is None:
        return None
    module, what = ENVIRONMENTS[env]
    if importlib.util.find_spec(module) is not None:
        return None
    return (
        f"{name} runs in the {env} environment ({what}), not this one ({module} is not installed here): make it "
        f"with `.venv/bin/nox -s {env} --install-only` (creates .nox/{env}), then run `.nox/{env}/bin/ivra ...`"
        + (
            " there (its clients may run anywhere)"
            if serving
            else f" (or serve it from there, `.nox/{env}/bin/ivra serve`, and give this environment ws://HOST:PORT)"
        )
    )


def split_inline_kwargs(name: str) -> tuple[str, dict]:
    """``sim:fixed_ms=40,per_sample_ms=2`` -> ("sim", {...}); other names pass through."""
    if name.startswith("sim:"):
        import argparse

        from ivra.cliargs import key_values

        try:
            return "sim", key_values(name[4:])
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
    return name, {}


def is_tabletop(name: str) -> bool:
    """The shipped tabletop policies and training-run directories (96x96 images, 4-d actions)."""
    return name in ("low", "full") or Path(name).is_dir()


def build_policy(name: str, kwargs: dict | None = None) -> Any:
    """The policy named ``name`` built with ``kwargs`` (see the module docstring)."""
    kwargs = dict(kwargs or {})
    name, inline = split_inline_kwargs(str(name))
    kwargs.update(inline)
    missing = missing_environment(name)
    if missing:
        raise ImportError(missing)
    if name == "zero":
        from ivra.policies.zero import ZeroPolicy

        return ZeroPolicy(**kwargs)
    if name == "tiny-vla":
        from ivra.policies.vla import TinyVLAPolicy

        return TinyVLAPolicy(**kwargs)
    if name == "sim":
        from ivra.policies.sim import SimLatencyPolicy

        return SimLatencyPolicy(**kwargs)
    if name.startswith(("ws://", "wss://")):  # a policy served by `ivra serve` (any Python environment)
        from ivra.policies.remote import RemotePolicy

        return RemotePolicy(name, **kwargs)
    if name.startswith("lerobot:"):  # the lerobot environment
        from ivra.policies.lerobot import LerobotPolicy

        return LerobotPolicy(kind=name.split(":", 1)[1], **kwargs)
    if name == "openvla":
        from ivra.policies.openvla import OpenVLAPolicy

        return OpenVLAPolicy(**kwargs)
    if name == "openvla-oft":
        from ivra.policies.openvla import OpenVLAOFTPolicy

        return OpenVLAOFTPolicy(**kwargs)
    if name == "flower":
        from ivra.policies.flower import FlowerPolicy

        return FlowerPolicy(**kwargs)
    if is_tabletop(name):
        from ivra.minivla.policy import MiniVLAPolicy

        return MiniVLAPolicy(name, **kwargs)
    if ":" in name and not name.startswith(("http:", "https:")):
        mod, cls = name.split(":", 1)
        return getattr(importlib.import_module(mod), cls)(**kwargs)
    raise ValueError(f"unknown policy {name!r}: expected {EXPECTED}")


def describe(policy: Any) -> dict:
    """What a policy answers: its name, chunk length and default executed steps."""
    from ivra.policies.base import chunk_spec

    h, e = chunk_spec(policy)
    return {"policy": getattr(policy, "name", type(policy).__name__), "chunk_length": h, "execute_steps": e}
