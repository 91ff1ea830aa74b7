"""Scene captions for the contrastive vision pre-training: every object and container, with a coarse place."""

from __future__ import annotations

from ivra.tabletop.tasks import Episode

_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "center", "right")


def _where(x: float, y: float) -> str:
    return f"{_ROWS[min(int(y * 3), 2)]} {_COLS[min(int(x * 3), 2)]}"


def _size(r: float) -> str:
    return "large" if r >= 0.075 else "small"


def caption(ep: Episode) -> str:
    items = [(c.y, c.x, f"{c.color} {c.ctype} {_where(c.x, c.y)}") for c in ep.containers]
    items += [(o.y, o.x, f"{_size(o.radius)} {o.color} {o.shape} {_where(o.x, o.y)}") for o in ep.objects]
    return " and ".join(text for *_, text in sorted(items))


def caption_vocabulary() -> list[str]:
    return sorted({*_ROWS, *_COLS, "large", "small", "and"})
