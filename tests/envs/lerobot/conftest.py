"""Fixtures of the lerobot environment's tests: tiny random-weight SmolVLA / pi0 / pi0.5 (ivra.tiny.lerobot)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lerobot", reason="run in the lerobot environment: .venv/bin/nox -s lerobot")


@pytest.fixture(autouse=True)
def _one_thread_no_grad():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)
