"""Shared by the pinned environments' suites (tests/envs/<name>, run by their nox sessions)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_no_grad():
    """Tiny models: one torch thread (fastest, and kind to a shared machine), no autograd."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)
