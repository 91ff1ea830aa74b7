"""What ``ivra serve --policy`` can name, and what each policy expects on the wire.

Every name of :func:`ivra.policies.registry.build_policy` that lives in this environment can be served:

* ``low`` | ``full`` | a training-run directory: the shipped tiny tabletop policy (``observation/image`` of the
  policy's own size, 96x96x3 uint8, and ``prompt``); single-step: answers (1, 4);
* ``zero`` | ``tiny-vla`` | ``package.module:Class``: the LIBERO-side policies (``observation/image`` HxWx3 uint8,
  optional ``observation/wrist_image``, ``observation/state``); ``tiny-vla`` with ``temperature > 0`` samples, each
  chunk seeded by its session (:mod:`ivra.serve.sessions`);
* ``lerobot:smolvla|pi0|pi05`` (the lerobot environment), ``openvla``, ``openvla-oft`` (the openvla environment),
  ``flower`` (the flower environment): chunk policies, answering their whole chunk (chunk_size / 8 /
  act_window_size actions); they need ``observation/wrist_image`` too, and all but FLOWER ``observation/state``
  (lerobot's: 8 entries, openpi's LIBERO layout, or ivra's 9);
* ``sim[:k=v,...]``: :class:`ivra.policies.sim.SimLatencyPolicy`, a stand-in for a GPU policy with a documented
  latency model (``chunk=``, ``execute=`` make it a chunk policy).

Policies hold no episode state (:mod:`ivra.policies.base`): the server's sessions keep each client's episode seed
and chunk count, so sampling and flow-matching policies are served reproducibly. Not servable: a ``ws://`` URL (it
is a server already: point the clients at it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ObsSpec:
    """What a request must carry. ``image_shape``: (H, W, 3) with None for a free dimension; ``requires``: further
    keys the policy cannot do without; ``state_dims``: the lengths of ``observation/state`` it takes (empty: any)."""

    image_shape: tuple[int | None, int | None, int] = (None, None, 3)
    image_required: bool = True
    action_dim: int = 7
    requires: tuple[str, ...] = ()
    state_dims: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {
            "image_shape": list(self.image_shape),
            "image_dtype": "uint8",
            "image_required": self.image_required,
            "action_dim": self.action_dim,
            "requires": list(self.requires),
            "state_dims": list(self.state_dims),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ObsSpec:
        return cls(
            image_shape=tuple(d["image_shape"]),
            image_required=bool(d["image_required"]),
            action_dim=int(d["action_dim"]),
            requires=tuple(d.get("requires", ())),
            state_dims=tuple(d.get("state_dims", ())),
        )


#: the LIBERO chunk policies read both cameras and the robot state
LIBERO_KEYS = ("observation/wrist_image", "observation/state")


def _action_dim(pol: Any) -> int:
    dim = getattr(pol, "action_dim", None)
    if dim is None:  # a lerobot policy: its config's action feature
        feats = getattr(getattr(getattr(pol, "policy", None), "config", None), "output_features", None) or {}
        action = feats.get("action")
        dim = action.shape[0] if action is not None else 7
    return int(dim)


def spec_of(name: str, pol: Any) -> ObsSpec:
    """The observation spec of a built policy: its own ``observation_spec`` if it has one, else by name."""
    from ivra.policies.registry import is_tabletop

    own = getattr(pol, "observation_spec", None)
    if isinstance(own, ObsSpec):
        return own
    if name == "sim":
        return ObsSpec(action_dim=pol.action_dim)
    if is_tabletop(name):
        s = pol.spec.image_size
        return ObsSpec(image_shape=(s, s, 3), action_dim=4)
    if name.startswith("lerobot:"):
        return ObsSpec(action_dim=_action_dim(pol), requires=LIBERO_KEYS, state_dims=(8, 9))
    if name == "openvla-oft":
        return ObsSpec(action_dim=_action_dim(pol), requires=LIBERO_KEYS)
    if name == "flower":
        return ObsSpec(action_dim=_action_dim(pol), requires=LIBERO_KEYS[:1])
    return ObsSpec(image_required=name != "zero", action_dim=_action_dim(pol))


def load_policy(spec: str, kwargs: dict | None = None):
    """Build the policy named by ``spec`` (:func:`ivra.policies.registry.build_policy`) and describe its
    observations: returns ``(policy, ObsSpec)``. A name that cannot be served raises ``ValueError`` saying why."""
    from ivra.policies.base import chunk_spec
    from ivra.policies.registry import build_policy, split_inline_kwargs

    kwargs = dict(kwargs or {})
    name, extra = split_inline_kwargs(spec)
    kwargs.update(extra)
    if name.startswith(("ws://", "wss://")):
        raise ValueError(
            f"{name} is a policy server already: point the clients at it instead of serving it again"
        )
    pol = build_policy(name, kwargs)
    chunk_spec(
        pol
    )  # a policy whose chunk length and executed steps disagree is refused here, not per request
    return pol, spec_of(name, pol)
