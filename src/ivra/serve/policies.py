"""What ``ivra serve --policy`` can name, and what each policy expects on the wire.

* ``low`` | ``full`` | a training-run directory: the shipped tiny tabletop policy (``observation/image`` of the
  policy's own size, 96x96x3 uint8, and ``prompt``);
* ``zero`` | ``tiny-vla`` | ``package.module:Class``: the LIBERO-side policies (``observation/image`` HxWx3 uint8,
  optional ``observation/wrist_image``, ``observation/state``), built as ``ivra eval libero`` builds them;
* ``sim``: :class:`SimLatencyPolicy`, a stand-in for a GPU policy with a documented latency model.

The server calls ``act`` statelessly (one observation -> one action; ``reset`` is never called), so policies with
per-episode state are refused: lerobot's (an action queue, seeded noise per episode) and sampling policies
(temperature > 0). Serving them needs per-client sessions or action chunks returned to the client (openpi's way).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ObsSpec:
    """What a request must carry. ``image_shape``: (H, W, 3) with None for a free dimension."""

    image_shape: tuple[int | None, int | None, int] = (None, None, 3)
    image_required: bool = True
    action_dim: int = 7

    def to_dict(self) -> dict:
        return {
            "image_shape": list(self.image_shape),
            "image_dtype": "uint8",
            "image_required": self.image_required,
            "action_dim": self.action_dim,
        }


class SimLatencyPolicy:
    """Simulates a GPU policy's latency: one call on a batch of B costs ``fixed_ms + per_sample_ms * B``
    milliseconds of wall time (a sleep: no CPU is used, as on a GPU), then returns a deterministic action per
    observation (a function of the image's mean and the instruction's length, so answers can be checked).

    The defaults (fixed 40 ms, 2 ms per sample) are of the order of a 7B VLA's single-step decode on one GPU
    (launch and weight-streaming costs dominate at small batch); they are parameters, not measurements.
    """

    name = "sim"
    per_sample_ivra = True

    def __init__(self, fixed_ms: float = 40.0, per_sample_ms: float = 2.0, action_dim: int = 7):
        if fixed_ms < 0 or per_sample_ms < 0:
            raise ValueError(f"latencies must be >= 0, got fixed_ms={fixed_ms} per_sample_ms={per_sample_ms}")
        self.fixed_ms, self.per_sample_ms, self.action_dim = (
            float(fixed_ms),
            float(per_sample_ms),
            int(action_dim),
        )
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.ivra_config: dict | None = None

    def set_ivra(self, cfg: dict | None) -> None:
        self.ivra_config = dict(cfg) if cfg else None

    def reset(self, seed: int | None = None) -> None:
        return None

    @staticmethod
    def expected(
        observation: dict, instruction: str, action_dim: int = 7, ivra: dict | None = None
    ) -> np.ndarray:
        img = np.asarray(observation["image"], dtype=np.float64)
        base = (img.mean() / 255.0) * 2 - 1
        a = np.full(action_dim, base) + 0.001 * len(instruction) * np.arange(action_dim)
        if ivra:  # a visible, deterministic difference between arms
            a = a + float(ivra.get("lam", 0.0))
        return a

    def act(self, observations: list[dict[str, Any]], instructions: list[str], ivra=None) -> np.ndarray:
        n = len(observations)
        time.sleep((self.fixed_ms + self.per_sample_ms * n) / 1000.0)
        self.calls += 1
        self.batch_sizes.append(n)
        arms = ivra if ivra is not None else [self.ivra_config] * n
        return np.stack(
            [self.expected(o, s, self.action_dim, c) for o, s, c in zip(observations, instructions, arms)]
        )


def _kwargs_from(spec: str) -> tuple[str, dict]:
    """``sim:fixed_ms=40,per_sample_ms=2`` -> ("sim", {...}); other names pass through."""
    if spec.startswith("sim:"):
        import argparse

        from ivra.cliargs import key_values

        try:
            return "sim", key_values(spec[4:])
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
    return spec, {}


def load_policy(spec: str, kwargs: dict | None = None):
    """Build the policy named by ``spec`` and describe its observations: returns ``(policy, ObsSpec)``."""
    kwargs = dict(kwargs or {})
    name, extra = _kwargs_from(spec)
    kwargs.update(extra)
    if name == "sim":
        pol = SimLatencyPolicy(**kwargs)
        return pol, ObsSpec(action_dim=pol.action_dim)
    if name in ("low", "full") or Path(name).is_dir():
        from ivra.minivla.policy import MiniVLAPolicy

        pol = MiniVLAPolicy(name, **kwargs)
        s = pol.spec.image_size
        return pol, ObsSpec(image_shape=(s, s, 3), action_dim=4)
    if name.startswith("lerobot:"):
        raise ValueError(
            f"{name} cannot be served yet: lerobot policies keep a per-episode action queue and per-episode seeded "
            "noise (ivra.policies.lerobot), which one server shared by many clients would mix up; run it in the "
            "evaluation workers (ivra eval libero --policy lerobot:...) instead"
        )
    if name == "zero" or name == "tiny-vla" or ":" in name:
        from ivra.eval.libero.job import build_policy

        pol = build_policy(name, kwargs)
        if float(getattr(pol, "temperature", 0) or 0) > 0:
            raise ValueError(
                f"{name} samples (temperature {pol.temperature}): its noise is seeded per episode by reset(seed), "
                "which a server shared by many clients does not call; serve it with temperature=0"
            )
        spec_obj = getattr(pol, "observation_spec", None)
        if isinstance(spec_obj, ObsSpec):
            return pol, spec_obj
        return pol, ObsSpec(image_required=name != "zero", action_dim=int(getattr(pol, "action_dim", 7)))
    raise ValueError(
        f"unknown policy {spec!r}: expected low | full | a training run directory | zero | tiny-vla | sim[:k=v,..] "
        "| lerobot:smolvla|pi0|pi05 | package.module:Class"
    )
