"""Scene vocabulary and geometry: colours, shapes, sizes, objects, containers, overlap-free layout sampling.

Coordinates are normalised image coordinates in [0, 1]: x to the right, y downward. An object's footprint
(what a pick must hit) is the disc of its ``radius`` around its centre; a container's footprint is its bowl
disc or its frame square (half-side ``radius``). An object is *in* a container when its centre lies inside
the container's footprint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Object/container colours, well separated in RGB (min pairwise distance > 100).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "orange": (244, 128, 20),
    "yellow": (246, 228, 56),
    "green": (44, 168, 64),
    "cyan": (40, 206, 222),
    "blue": (40, 80, 226),
    "purple": (146, 66, 206),
    "pink": (250, 140, 205),
}
#: Object shapes (the pick footprint is always the disc of the object's radius).
SHAPES: tuple[str, ...] = (
    "square",
    "circle",
    "triangle",
    "star",
    "cross",
    "diamond",
    "hexagon",
    "ring",
    "heart",
)
#: Held out of every split except ``novel_object`` (never drawn anywhere else, not even as a distractor).
NOVEL_COLOR = "pink"
NOVEL_SHAPE = "heart"
TRAIN_COLORS: tuple[str, ...] = tuple(c for c in COLORS if c != NOVEL_COLOR)
TRAIN_SHAPES: tuple[str, ...] = tuple(s for s in SHAPES if s != NOVEL_SHAPE)

#: Object radii (fraction of the image side) by size word.
SIZES: dict[str, float] = {"small": 0.06, "large": 0.09}
CLUTTER_RADIUS = 0.058
CONTAINER_TYPES: tuple[str, ...] = ("bowl", "frame")
CONTAINER_RADIUS = {"bowl": 0.15, "frame": 0.14}

TABLE_COLOR = (118, 104, 90)


@dataclass
class Obj:
    uid: int
    color: str
    shape: str
    radius: float
    x: float
    y: float

    @property
    def kind(self) -> tuple[str, str]:
        return (self.color, self.shape)

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def contains(self, px: float, py: float) -> bool:
        return (px - self.x) ** 2 + (py - self.y) ** 2 <= self.radius**2


@dataclass
class Container:
    uid: int
    color: str
    ctype: str  # "bowl" | "frame"
    radius: float  # bowl radius or frame half-side
    x: float
    y: float

    @property
    def name(self) -> str:
        return f"{self.color} {self.ctype}"

    def contains(self, px: float, py: float) -> bool:
        if self.ctype == "bowl":
            return (px - self.x) ** 2 + (py - self.y) ** 2 < self.radius**2
        return abs(px - self.x) < self.radius and abs(py - self.y) < self.radius

    def distance(self, px: float, py: float) -> float:
        """Distance from a point to the footprint (0 inside)."""
        if self.ctype == "bowl":
            return max(0.0, math.hypot(px - self.x, py - self.y) - self.radius)
        dx = max(0.0, abs(px - self.x) - self.radius)
        dy = max(0.0, abs(py - self.y) - self.radius)
        return math.hypot(dx, dy)


def shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape of nominal radius ``r`` centred on (cx, cy) (any consistent unit).

    ``circle`` and ``ring`` are drawn as ellipses by the renderer and are not handled here.
    """
    if shape == "square":
        s = 0.82 * r
        pts = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":
        R = 1.12 * r
        pts = [(R * math.sin(a), -R * math.cos(a)) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
        pts = [(px, py + 0.12 * r) for px, py in pts]
    elif shape == "star":
        pts = []
        for i in range(10):
            R = 1.12 * r if i % 2 == 0 else 0.47 * r
            a = i * math.pi / 5
            pts.append((R * math.sin(a), -R * math.cos(a) + 0.06 * r))
    elif shape == "cross":
        w, s = 0.34 * r, 0.95 * r
        pts = [
            (-w, -s),
            (w, -s),
            (w, -w),
            (s, -w),
            (s, w),
            (w, w),
            (w, s),
            (-w, s),
            (-w, w),
            (-s, w),
            (-s, -w),
            (-w, -w),
        ]
    elif shape == "diamond":
        pts = [(0.0, -1.1 * r), (0.78 * r, 0.0), (0.0, 1.1 * r), (-0.78 * r, 0.0)]
    elif shape == "hexagon":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.arange(6) * math.pi / 3]
    elif shape == "heart":
        pts = []
        for t in np.linspace(0, 2 * math.pi, 36, endpoint=False):
            hx = 16 * math.sin(t) ** 3
            hy = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((hx / 16.5 * r, (-hy - 2.5) / 15.5 * r))
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    return [(cx + px, cy + py) for px, py in pts]


class Layout:
    """Rejection sampler for overlap-free placement of containers and objects in the unit square."""

    def __init__(self, rng: np.random.Generator, gap: float = 0.025, edge: float = 0.015):
        self.rng = rng
        self.gap = gap
        self.edge = edge
        self.discs: list[tuple[float, float, float]] = []
        self.containers: list[Container] = []

    def free_disc(self, x: float, y: float, r: float, gap: float) -> bool:
        for ox, oy, orad in self.discs:
            if (x - ox) ** 2 + (y - oy) ** 2 < (r + orad + gap) ** 2:
                return False
        return all(c.distance(x, y) >= r + gap for c in self.containers)

    def add_container(
        self, color: str, ctype: str, radius: float, uid: int, tries: int = 200
    ) -> Container | None:
        lo, hi = radius + self.edge, 1.0 - radius - self.edge
        for _ in range(tries):
            x, y = self.rng.uniform(lo, hi, size=2)
            ok = True
            for c in self.containers:
                reach = radius + c.radius + 2 * self.gap
                if abs(x - c.x) < reach and abs(y - c.y) < reach:
                    ok = False
                    break
            if ok:
                c = Container(uid, color, ctype, radius, float(x), float(y))
                self.containers.append(c)
                return c
        return None

    def add_disc(
        self,
        r: float,
        accept: Callable[[float, float], bool] | None = None,
        sampler: Callable[[np.random.Generator], tuple[float, float]] | None = None,
        gap: float | None = None,
        tries: int = 200,
    ) -> tuple[float, float] | None:
        gap = self.gap if gap is None else gap
        lo, hi = r + self.edge, 1.0 - r - self.edge
        for _ in range(tries):
            if sampler is None:
                x, y = self.rng.uniform(lo, hi, size=2)
            else:
                x, y = sampler(self.rng)
            if not (lo <= x <= hi and lo <= y <= hi):
                continue
            if accept is not None and not accept(x, y):
                continue
            if self.free_disc(x, y, r, gap):
                self.discs.append((float(x), float(y), r))
                return float(x), float(y)
        return None
