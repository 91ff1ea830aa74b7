"""Scripted expert: pick the centre of the next required object, place it at a free spot in the container."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .scene import Container, Obj
from .tasks import Episode

_GRID = np.linspace(-1.0, 1.0, 9)
_GX, _GY = (a.ravel() for a in np.meshgrid(_GRID, _GRID))
_MIN_CLEARANCE = 0.005


def place_point(container: Container, obj: Obj, inside: Sequence[Obj]) -> tuple[float, float]:
    """A point well inside ``container`` where ``obj`` does not collide with the objects already ``inside``.

    Among candidate points on a grid, prefers collision-free ones closest to the centre, else the one with the
    largest clearance.
    """
    lim = container.radius - max(0.45 * obj.radius, 0.03)
    xs, ys = _GX * lim, _GY * lim
    if container.ctype == "bowl":
        keep = xs**2 + ys**2 <= lim**2 + 1e-12
        xs, ys = xs[keep], ys[keep]
    xs, ys = xs + container.x, ys + container.y
    centre_d = np.hypot(xs - container.x, ys - container.y)
    if not inside:
        i = int(np.argmin(centre_d))
        return float(xs[i]), float(ys[i])
    ox = np.array([o.x for o in inside])
    oy = np.array([o.y for o in inside])
    orad = np.array([o.radius for o in inside])
    d = np.hypot(xs[:, None] - ox[None], ys[:, None] - oy[None]) - orad[None] - obj.radius
    clearance = d.min(axis=1)
    free = clearance >= _MIN_CLEARANCE
    i = int(np.argmin(np.where(free, centre_d, np.inf))) if free.any() else int(np.argmax(clearance))
    return float(xs[i]), float(ys[i])


def expert_action(ep: Episode) -> np.ndarray:
    """Next expert action ``[pick_x, pick_y, place_x, place_y]`` for the current state of ``ep``.

    Returns the all-zero (no-op) action once every required object is in the target container.
    """
    target = ep.container(ep.target)
    for uid in ep.required:
        o = ep.obj(uid)
        if not target.contains(o.x, o.y):
            inside = [p for p in ep.objects if p.uid != uid and target.contains(p.x, p.y)]
            qx, qy = place_point(target, o, inside)
            return np.array([o.x, o.y, qx, qy], dtype=np.float32)
    return np.zeros(4, dtype=np.float32)
