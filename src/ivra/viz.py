"""Affinity overlays and side-by-side figures (the paper's qualitative figure), with matplotlib."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def affinity_map(A: np.ndarray, query: int, grid: tuple[int, int]) -> np.ndarray:
    """Row ``query`` of an (n, n) affinity reshaped to the patch grid (rows, cols)."""
    return np.asarray(A)[query].reshape(grid)


def pick_queries(A: np.ndarray, k: int = 3) -> list[int]:
    """``k`` query patches spread over the image: the most self-distinct patches first (greedy farthest)."""
    A = np.asarray(A)
    first = int(np.argmin(A.mean(1)))  # least similar to everything: usually on an object
    chosen = [first]
    while len(chosen) < k:
        score = A[:, chosen].max(1)
        score[chosen] = np.inf
        chosen.append(int(np.argmin(score)))
    return chosen


def figure(
    image: np.ndarray,
    A: np.ndarray,
    path: str | Path,
    queries: Sequence[int] | None = None,
    actions: dict[str, np.ndarray] | None = None,
    title: str = "",
) -> Path:
    """Observation (with each arm's action drawn), then one panel per query patch: its affinity row as a heatmap
    over the image, the query patch outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    A = np.asarray(A, dtype=np.float32)
    n = A.shape[0]
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"affinity of {n} tokens is not a square patch grid")
    queries = list(queries) if queries is not None else pick_queries(A)
    h, w = image.shape[:2]
    # the observation's title wrapped to its panel (a long instruction ran past the figure's edge, clipped), and
    # the figure as much taller as its extra lines need
    title = textwrap.fill(title or "observation", width=40)
    extra = 0.2 * title.count("\n")
    fig, axes = plt.subplots(
        1, 1 + len(queries), figsize=(3.2 * (1 + len(queries)), 3.4 + extra), layout="constrained"
    )
    ax = axes[0]
    ax.imshow(image)
    colors = {"baseline": "#ffffff", "ivra": "#ffd400"}
    for name, a in (actions or {}).items():
        if a is None or not np.all(np.isfinite(a)):
            continue
        c = colors.get(name, "#00e0ff")
        (px, py, qx, qy) = (a[0] * w, a[1] * h, a[2] * w, a[3] * h)
        ax.plot([px], [py], "o", mfc="none", mec=c, mew=2, ms=10)
        ax.plot([qx], [qy], "x", color=c, mew=2, ms=10)
        ax.annotate("", (qx, qy), (px, py), arrowprops={"arrowstyle": "->", "color": c, "lw": 1.5})
        ax.plot([], [], color=c, label=name)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=7, framealpha=0.6)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    ph, pw = h / side, w / side
    for ax, q in zip(axes[1:], queries):
        ax.imshow(image)
        ax.imshow(
            affinity_map(A, q, (side, side)),
            cmap="magma",
            alpha=0.6,
            extent=(0, w, h, 0),
            vmin=-1,
            vmax=1,
            interpolation="nearest",
        )
        r, c = divmod(q, side)
        ax.add_patch(Rectangle((c * pw, r * ph), pw, ph, fill=False, ec="#00ff66", lw=2))
        ax.set_title(f"affinity of patch ({r}, {c})", fontsize=8)
        ax.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.08)  # nothing drawn is cut off
    plt.close(fig)
    return path


def heatmap(
    values: np.ndarray,
    rows: Sequence,
    cols: Sequence,
    path: str | Path,
    title: str,
    row_label: str,
    col_label: str,
    fmt: str = "{:+.1f}",
) -> Path:
    """Annotated heatmap (diverging around 0) for sweep grids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=float)
    lim = max(1e-9, float(np.nanmax(np.abs(values))))
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2, 0.6 * len(rows) + 1.6))
    im = ax.imshow(values, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
