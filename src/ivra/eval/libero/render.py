"""Render on demand: LIBERO's cameras are rendered only for the observations a policy (or a video) reads.

robosuite renders every camera at every control step (when its observables sample, at the step's first physics
substep), at every reset (the sensor check when it re-binds the sensors, then a forced update) and at
``set_init_state``. On a CPU with software OpenGL that is most of an episode's time (about 166 ms per camera image
at any resolution on this project's 2-core machine, against a few ms of physics per step), yet a chunk policy reads
one observation per chunk and nobody reads the wait steps' or the resets'.

Inside :func:`unread` the simulator's ``render`` returns a blank image without rendering. Nothing else changes:
the observables sample at the same substeps as before (their timing logic still runs), physics never reads the
renderer, so the simulator's state, success checks, rewards and every image a policy does read are what rendering
every step gives; ``tests/eval/test_libero_render.py`` holds every recorded field equal with and without it.
``ivra eval libero --render every`` turns it off.

The switch is robosuite's ``MjSim.render`` wrapped once per process (:func:`install`): a hard reset replaces the
environment's simulator and sensors, not the class. It is a per-thread flag, so a job in another thread is not
affected.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator

import numpy as np

MODES = ("demand", "every")
_state = threading.local()


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"render mode {mode!r}: expected one of {', '.join(MODES)}")
    return mode


def skipping() -> bool:
    """True inside :func:`unread` (this thread)."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def unread(active: bool = True) -> Iterator[None]:
    """Within: camera renders of this thread return blank images (their observation is read by nobody).
    ``active=False`` makes it a no-op (``--render every``, or a frame a video needs)."""
    if not active:
        yield
        return
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def _blank(width, height, depth: bool):
    h, w = int(height), int(width)
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    return (rgb, np.zeros((h, w), dtype=np.float32)) if depth else rgb


def install() -> None:
    """Wrap robosuite's ``MjSim.render`` so that :func:`unread` can skip it (idempotent; imports robosuite)."""
    from robosuite.utils.binding_utils import MjSim

    if getattr(MjSim.render, "_ivra_on_demand", False):
        return
    original = MjSim.render

    @functools.wraps(original)
    def render(self, width=None, height=None, *, camera_name=None, depth=False, segmentation=False, **kw):
        if skipping() and not segmentation and width is not None and height is not None:
            _state.skipped = getattr(_state, "skipped", 0) + 1
            return _blank(width, height, depth)
        t0 = time.perf_counter()
        try:
            return original(
                self, width, height, camera_name=camera_name, depth=depth, segmentation=segmentation, **kw
            )
        finally:
            _state.rendered = getattr(_state, "rendered", 0) + 1
            _state.render_s = getattr(_state, "render_s", 0.0) + time.perf_counter() - t0

    render._ivra_on_demand = True
    MjSim.render = render


def counts() -> dict[str, float]:
    """Camera images rendered and skipped by this thread since :func:`install`, and the seconds spent rendering
    (for benchmarks)."""
    return {
        "rendered": getattr(_state, "rendered", 0),
        "skipped": getattr(_state, "skipped", 0),
        "render_s": getattr(_state, "render_s", 0.0),
    }
