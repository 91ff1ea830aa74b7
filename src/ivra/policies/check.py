"""The arm check every verb runs before its first episode or request (``ivra demo``, ``sweep``, ``viz``,
``eval libero``, ``serve``): each IVRA arm is set once on the loaded policy, so a setting it cannot take is one line
and exit status 2, not an error in every episode.

For each arm with a setting, in this order:

1. the setting is validated (:class:`ivra.IVRAConfig`): an unknown field or a bad value;
2. a policy with ``set_ivra`` gets ``set_ivra(cfg)`` then ``set_ivra(None)``: the policy attaches IVRA the way its
   episodes will (its own target module and adapter), and is left without it. A policy served by ``ivra serve``
   (:class:`ivra.policies.remote.RemotePolicy`) only records the arm there: the server checks a setting when it
   uses it (its own arms were checked when it started);
3. a policy without ``set_ivra`` but with a ``model`` gets ``ivra.attach(model, cfg).detach()`` (auto-detected
   adapter);
4. a policy with neither cannot take IVRA settings: refused.

What differs between the verbs is only how the message names an arm (``label``): ``IVRA setting layer=99, lam=0.3
(arm ivra): ...`` for the A/B verbs, ``--ivra layer=99, lam=0.3 (default arm): ...`` for ``ivra serve``.
"""

from __future__ import annotations

from collections.abc import Callable

from ivra.cliargs import UsageError


def _arm_label(arm: str) -> str:
    return f"IVRA setting {{setting}} (arm {arm})"


def check_arms(
    policy,
    arms: dict[str, dict | None],
    policy_name: str | None = None,
    label: Callable[[str], str] = _arm_label,
) -> None:
    """Set every arm's IVRA setting on ``policy`` once (see the module); a mistake raises :class:`UsageError`
    ``"<label>: <why>"``, ``label(arm)`` with ``{setting}`` for the setting in words."""
    import ivra
    from ivra.adapters import IVRAError
    from ivra.config import IVRAConfig, describe_setting

    name = policy_name or getattr(policy, "name", None) or type(policy).__name__
    for arm, cfg in arms.items():
        if not cfg:
            continue
        what = label(arm).format(setting=describe_setting(cfg))
        try:
            config = IVRAConfig(**cfg)
            if hasattr(policy, "set_ivra"):
                try:
                    policy.set_ivra(cfg)
                finally:
                    policy.set_ivra(None)
            elif getattr(policy, "model", None) is not None:
                ivra.attach(policy.model, config).detach()
            else:
                raise UsageError(
                    f"--policy {name} cannot take IVRA settings (no set_ivra and no model); {what} has one"
                )
        except (IVRAError, ValueError) as exc:  # ConfigError is a ValueError
            if isinstance(exc, UsageError):
                raise
            raise UsageError(f"{what}: {exc}") from None
