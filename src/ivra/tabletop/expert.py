"""Scripted expert: pick the centre of the next required object, place it at a free spot in the container."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .scene import Container, Obj
from .tasks import Episode

_GRID = np.linspace(-1.0, 1.0, 9)
_GX, _GY = (a.ravel() for a in np.meshgrid(_GRID, _GRID))
_MIN_CLEARANCE = 0.005


def _limit(container: Container, obj: Obj) -> float:
    return container.radius - max(0.45 * obj.radius, 0.03)


def _clearance(x, y, obj: Obj, inside: Sequence[Obj]) -> np.ndarray:
    ox = np.array([o.x for o in inside])
    oy = np.array([o.y for o in inside])
    orad = np.array([o.radius for o in inside])
    d = np.hypot(np.asarray(x)[..., None] - ox, np.asarray(y)[..., None] - oy) - orad - obj.radius
    return d.min(axis=-1)


def place_point(
    container: Container, obj: Obj, inside: Sequence[Obj], preferred: tuple[float, float] | None = None
) -> tuple[float, float]:
    """A point well inside ``container`` where ``obj`` does not collide with the objects already ``inside``.

    Uses ``preferred`` when it is free; otherwise, among candidate points on a grid, the collision-free one
    closest to the centre, else the one with the largest clearance.
    """
    if preferred is not None and (not inside or _clearance(*preferred, obj, inside) >= _MIN_CLEARANCE):
        return preferred
    lim = _limit(container, obj)
    xs, ys = _GX * lim, _GY * lim
    if container.ctype == "bowl":
        keep = xs**2 + ys**2 <= lim**2 + 1e-12
        xs, ys = xs[keep], ys[keep]
    centre_d = np.hypot(xs, ys)
    xs, ys = xs + container.x, ys + container.y
    if not inside:
        i = int(np.argmin(centre_d))
        return float(xs[i]), float(ys[i])
    clearance = _clearance(xs, ys, obj, inside)
    free = clearance >= _MIN_CLEARANCE
    i = int(np.argmin(np.where(free, centre_d, np.inf))) if free.any() else int(np.argmax(clearance))
    return float(xs[i]), float(ys[i])


def slots(container: Container, objs: Sequence[Obj]) -> list[tuple[float, float]]:
    """Planned places for ``objs`` in ``container``: the centre for one object, else evenly on a circle."""
    if len(objs) == 1:
        return [(container.x, container.y)]
    rho = min(_limit(container, o) for o in objs)
    angles = -np.pi / 2 + 2 * np.pi * np.arange(len(objs)) / len(objs)
    return [(float(container.x + rho * np.cos(a)), float(container.y + rho * np.sin(a))) for a in angles]


def expert_action(ep: Episode) -> np.ndarray:
    """Next expert action ``[pick_x, pick_y, place_x, place_y]`` for the current state of ``ep``.

    Returns the all-zero (no-op) action once every required object is in the target container.
    """
    target = ep.container(ep.target)
    required = [ep.obj(uid) for uid in ep.required]
    for o, slot in zip(required, slots(target, required)):
        if not target.contains(o.x, o.y):
            inside = [p for p in ep.objects if p.uid != o.uid and target.contains(p.x, p.y)]
            qx, qy = place_point(target, o, inside, preferred=slot)
            return np.array([o.x, o.y, qx, qy], dtype=np.float32)
    return np.zeros(4, dtype=np.float32)
