"""The affinity figure keeps every title inside the saved image (issue 23 item 8: the left title was clipped)."""

from __future__ import annotations

import numpy as np
import pytest

TITLES = [
    "placement seed 3: place every yellow object in the purple frame",
    "placement seed 3: put the small red block into the blue bowl that is left of the green box",
]


@pytest.mark.parametrize("title", TITLES)
def test_a_long_observation_title_stays_inside_the_figure(title, tmp_path):
    import matplotlib.image

    from ivra import viz

    rng = np.random.default_rng(0)
    A = rng.uniform(-1, 1, (16, 16)).astype(np.float32)
    image = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    path = viz.figure(image, A, tmp_path / "a.png", queries=[0, 5, 10], title=title)
    png = matplotlib.image.imread(path)[..., :3]
    # a margin of background all round: no text or image touches an edge of the saved figure (a clipped title does)
    for edge in (png[:3], png[-3:], png[:, :3], png[:, -3:]):
        assert edge.min() > 0.99, "something is cut off at an edge of the figure"
