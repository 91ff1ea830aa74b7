"""A pytest plugin that records each test's CPU time (its process and the child processes it waited for), not its
wall time, which another worker or a background suite inflates (docs/development.md, "The test command and its
time"). One line per test, tab-separated: node id, wall s, own CPU s, children's CPU s, in
``$IVRA_CPU_LOG_DIR/cpu-<xdist worker>.tsv`` (default: the current folder).

    PYTHONPATH=scripts OMP_NUM_THREADS=1 .venv/bin/python -m pytest -n 2 --no-loadscope-reorder -p pytest_cpu
"""

from __future__ import annotations

import os
import resource
import time

import pytest

_log = None


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _log
    if _log is None:
        folder = os.environ.get("IVRA_CPU_LOG_DIR", ".")
        _log = open(os.path.join(folder, f"cpu-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.tsv"), "a")
    own0, child0 = _cpu()
    wall0 = time.time()
    yield
    own1, child1 = _cpu()
    _log.write(f"{item.nodeid}\t{time.time() - wall0:.2f}\t{own1 - own0:.2f}\t{child1 - child0:.2f}\n")
    _log.flush()
