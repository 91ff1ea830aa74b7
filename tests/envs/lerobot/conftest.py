"""Fixtures of the lerobot environment's tests: tiny random-weight SmolVLA / pi0 / pi0.5 (ivra.tiny.lerobot)."""

from __future__ import annotations

import pytest

pytest.importorskip("lerobot", reason="run in the lerobot environment: .venv/bin/nox -s lerobot")
