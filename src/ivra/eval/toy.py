"""A tiny deterministic job for exercising :func:`ivra.eval.executor.execute` (tests, smoke checks).

``ToyJob.run`` computes a value from the unit alone; ``fail_once`` keys raise on their first attempt
(remembered through marker files in ``state_dir``, so it works across processes), ``fail_always`` keys
always raise, and ``sleep_s`` slows every unit down (to kill a run midway). ``setup`` and ``teardown`` leave
one marker file per process in ``state_dir``.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path


class ToyJob:
    def __init__(
        self,
        state_dir: str | os.PathLike | None = None,
        fail_once: tuple[str, ...] = (),
        fail_always: tuple[str, ...] = (),
        sleep_s: float = 0.0,
    ):
        self.state_dir = str(state_dir) if state_dir is not None else None
        self.fail_once = tuple(fail_once)
        self.fail_always = tuple(fail_always)
        self.sleep_s = float(sleep_s)
        self.setup_calls = 0

    def setup(self) -> None:
        self.setup_calls += 1
        if self.state_dir:
            Path(self.state_dir, "setup").mkdir(parents=True, exist_ok=True)
            Path(self.state_dir, "setup", str(os.getpid())).touch()

    def teardown(self) -> None:
        if self.state_dir:
            Path(self.state_dir, "teardown").mkdir(parents=True, exist_ok=True)
            Path(self.state_dir, "teardown", str(os.getpid())).touch()

    def run(self, unit: dict) -> dict:
        key = unit["key"]
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if key in self.fail_always:
            raise RuntimeError(f"unit {key} always fails")
        if key in self.fail_once:
            marker = Path(self.state_dir or ".", f"failed-{key}")
            if not marker.exists():
                marker.touch()
                raise ValueError(f"unit {key} fails on its first attempt")
        digest = hashlib.sha256(repr(sorted(unit.items())).encode()).hexdigest()
        x = int(unit.get("x", 0))
        return {
            "square": x * x,
            "digest": digest[:12],
            "success": x % 3 == 0,
            "setup_calls": self.setup_calls,
        }
