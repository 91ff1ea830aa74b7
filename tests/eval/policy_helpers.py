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
