"""``ivra serve`` as a subprocess (any Python environment), stopped by the test (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def serve_process(python, *args, extra_path: str | None = None, timeout: float = 180.0):
    """Yields ``(url, proc, lines)``; ``lines`` collects the server's output."""
    env = dict(os.environ)
    paths = [str(ROOT / "src")] + ([extra_path] if extra_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [str(python), "-m", "ivra.cli", "serve", "--port", "0", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    )
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def reader():
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r" on (ws://127\.0\.0\.1:\d+)", line)
            if m and not url:
                url.append(m.group(1))
                found.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + timeout
        while not found.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ivra serve did not start ({' '.join(cmd)}):\n{''.join(lines)[-3000:]}")
        yield url[0], proc, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        t.join(10)
