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

from dataclasses import dataclass



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


def load_policy(spec: str, kwargs: dict | None = None):
    """Build the policy named by ``spec`` (:func:`ivra.policies.registry.build_policy`) and describe its
    observations: returns ``(policy, ObsSpec)``."""
    from ivra.policies.registry import build_policy, is_tabletop, split_inline_kwargs

    kwargs = dict(kwargs or {})
    name, extra = split_inline_kwargs(spec)
    kwargs.update(extra)
    if name == "sim":
        pol = build_policy(name, kwargs)
        return pol, ObsSpec(action_dim=pol.action_dim)
    if is_tabletop(name):
        pol = build_policy(name, kwargs)
        s = pol.spec.image_size
        return pol, ObsSpec(image_shape=(s, s, 3), action_dim=4)
    if name.startswith("lerobot:"):
        raise ValueError(
            f"{name} cannot be served yet: lerobot policies keep a per-episode action queue and per-episode seeded "
            "noise (ivra.policies.lerobot), which one server shared by many clients would mix up; run it in the "
            "evaluation workers (ivra eval libero --policy lerobot:...) instead"
        )
    if name == "zero" or name == "tiny-vla" or ":" in name:
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
