"""The lerobot environment (built with uv by noxfile.py) holds the versions requirements/lerobot.txt pins (tests/pins.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the shared pin check

from pins import pin_test  # noqa: E402

test_installed_versions_are_the_pinned_ones = pin_test("lerobot.txt")
