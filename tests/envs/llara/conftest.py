"""The `llara` environment's tests (nox session `llara`): collected only where llava-torch and transformers 4.37
are installed (elsewhere this directory is ignored)."""

from __future__ import annotations

try:
    import llava.model  # noqa: F401
    import transformers

    _OK = transformers.__version__.startswith("4.37")
except ImportError:
    _OK = False

collect_ignore_glob = [] if _OK else ["test_*.py"]
