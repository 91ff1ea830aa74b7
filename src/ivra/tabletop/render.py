"""Deterministic top-down rendering with PIL: draw at ``supersample`` x the resolution, downsize with LANCZOS."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .scene import COLORS, TABLE_COLOR, Container, Obj, shape_points

SUPERSAMPLE_CANVAS = 288  # draw on a canvas of at least this many pixels (supersample factor 2..4)
BOWL_RIM = 0.03
FRAME_WIDTH = 0.032
OUTLINE = 0.012  # dark outline width around objects (fraction of the image side)


def _shade(rgb: Sequence[int], f: float) -> tuple[int, int, int]:
    return tuple(int(round(c * f)) for c in rgb)


def _mix(a: Sequence[int], b: Sequence[int], t: float) -> tuple[int, int, int]:
    return tuple(int(round((1 - t) * x + t * y)) for x, y in zip(a, b))


@lru_cache(maxsize=8)
def _table(size: int) -> Image.Image:
    """Plain table colour with a faint, fixed, low-frequency texture (same for every scene)."""
    rng = np.random.default_rng(12345)
    coarse = rng.normal(0.0, 1.0, size=(10, 10)).astype(np.float32)
    low = Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC)
    ys = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None]
    grain = np.sin(2 * np.pi * (ys * 9.0 + 0.15 * np.asarray(low))) * 2.0
    tex = np.asarray(low) * 3.0 + grain
    img = np.asarray(TABLE_COLOR, np.float32)[None, None, :] + tex[..., None]
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), mode="RGB")


def _draw_container(d: ImageDraw.ImageDraw, c: Container, s: int) -> None:
    rgb = COLORS[c.color]
    x, y, r = c.x * s, c.y * s, c.radius * s
    if c.ctype == "bowl":
        rim = BOWL_RIM * s
        d.ellipse((x - r, y - r, x + r, y + r), fill=_shade(rgb, 0.8))
        inner = r - rim
        d.ellipse((x - inner, y - inner, x + inner, y + inner), fill=_mix(rgb, (236, 232, 222), 0.62))
    else:
        w = max(1, round(FRAME_WIDTH * s))
        d.rectangle((x - r, y - r, x + r, y + r), outline=rgb, width=w)


def _draw_object(d: ImageDraw.ImageDraw, o: Obj, s: int) -> None:
    rgb = COLORS[o.color]
    dark = _shade(rgb, 0.45)
    x, y, r = o.x * s, o.y * s, o.radius * s
    ow = max(1, round(OUTLINE * s))
    if o.shape == "circle":
        d.ellipse((x - r, y - r, x + r, y + r), fill=rgb, outline=dark, width=ow)
    elif o.shape == "ring":
        w = 0.42 * r
        d.ellipse((x - r, y - r, x + r, y + r), outline=dark, width=round(w + ow))
        ri = r - ow
        d.ellipse((x - ri, y - ri, x + ri, y + ri), outline=rgb, width=max(1, round(w - ow)))
    else:
        d.polygon(shape_points(o.shape, x, y, r), fill=rgb, outline=dark, width=ow)


def supersample_factor(resolution: int) -> int:
    """Default supersampling factor: 3 at 96 px, 4 at <= 72 px, 2 at >= 144 px."""
    return int(min(4, max(2, math.ceil(SUPERSAMPLE_CANVAS / int(resolution)))))


def render_scene(
    objects: Sequence[Obj],
    containers: Sequence[Container],
    resolution: int = 96,
    supersample: int | None = None,
) -> np.ndarray:
    """Render a scene to an ``resolution x resolution x 3`` uint8 array (objects drawn in list order).

    Drawn at ``supersample`` x the resolution (default :func:`supersample_factor`), then downsized with
    LANCZOS; the output is a deterministic function of the scene, the resolution and ``supersample``.
    """
    supersample = supersample_factor(resolution) if supersample is None else int(supersample)
    s = int(resolution) * supersample
    img = _table(s).copy()
    d = ImageDraw.Draw(img)
    for c in containers:
        _draw_container(d, c, s)
    for o in objects:
        _draw_object(d, o, s)
    if supersample != 1:
        img = img.resize((resolution, resolution), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def draw_action(
    image: np.ndarray,
    action: Sequence[float],
    color: Sequence[int] = (255, 255, 255),
    supersample: int = 4,
) -> np.ndarray:
    """Return a copy of ``image`` with a pick circle, a place cross and an arrow from pick to place.

    ``action`` is ``[pick_x, pick_y, place_x, place_y]`` in [0, 1] image coordinates.
    """
    base = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    w, h = base.size
    W, H = w * supersample, h * supersample
    px, py, qx, qy = (float(np.clip(v, 0.0, 1.0)) for v in np.asarray(action, dtype=np.float64)[:4])
    p, q = (px * W, py * H), (qx * W, qy * H)
    side = min(W, H)
    lw = max(1, round(0.018 * side))
    rad, arm = 0.05 * side, 0.04 * side

    def mask(extra: int) -> Image.Image:
        m = Image.new("L", (W, H), 0)
        d = ImageDraw.Draw(m)
        width = lw + 2 * extra
        d.ellipse((p[0] - rad, p[1] - rad, p[0] + rad, p[1] + rad), outline=255, width=width)
        for sx, sy in ((1, 1), (1, -1)):
            d.line(
                (q[0] - sx * arm, q[1] - sy * arm, q[0] + sx * arm, q[1] + sy * arm), fill=255, width=width
            )
        length = math.dist(p, q)
        if length > rad + arm:
            ux, uy = (q[0] - p[0]) / length, (q[1] - p[1]) / length
            a = (p[0] + ux * rad, p[1] + uy * rad)
            b = (q[0] - ux * arm * 1.2, q[1] - uy * arm * 1.2)
            d.line((*a, *b), fill=255, width=width)
            head = 0.05 * side + extra
            for sgn in (1, -1):
                ang = math.atan2(uy, ux) + math.pi + sgn * 0.45
                d.line((*b, b[0] + head * math.cos(ang), b[1] + head * math.sin(ang)), fill=255, width=width)
        return m.resize((w, h), Image.LANCZOS)

    out = Image.composite(Image.new("RGB", (w, h), (0, 0, 0)), base, mask(max(1, supersample // 2)))
    out = Image.composite(Image.new("RGB", (w, h), tuple(int(c) for c in color)), out, mask(0))
    return np.asarray(out, dtype=np.uint8)
