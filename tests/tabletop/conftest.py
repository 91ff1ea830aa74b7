"""Make ``src/`` importable when the package is not installed (src layout)."""

import sys
from pathlib import Path

try:
    import ivra.tabletop  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
