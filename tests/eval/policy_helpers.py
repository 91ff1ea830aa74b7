"""Policies for the harness tests, importable by a child ``ivra`` as ``policy_helpers:Class`` (put this folder on
PYTHONPATH)."""

from __future__ import annotations

from ivra.policies.zero import ZeroPolicy


class FailsUnderIVRA(ZeroPolicy):
    """Takes any IVRA setting (so the CLI's up-front check passes), then fails every step of an IVRA arm: an error
    that only an episode can show."""

    def act(self, observations, instructions):
        if self.ivra_config:
            raise RuntimeError("this policy fails under IVRA")
        return super().act(observations, instructions)


class NaNUnderIVRA(ZeroPolicy):
    """Takes any IVRA setting, then answers NaN actions under it from the second step on (a policy whose output
    cannot be decoded, say): the action must never reach the simulator."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.steps = 0

    def act(self, observations, instructions):
        out = super().act(observations, instructions)
        if self.ivra_config:
            self.steps += 1
            if self.steps > 1:
                out = out.copy()
                out[:, 3] = float("nan")
        return out
