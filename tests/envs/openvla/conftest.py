"""The `openvla` environment's tests (nox session `openvla`): collected only where timm 0.9.x and transformers
4.40 are installed (elsewhere, e.g. the core env, this directory is ignored: the rebuilt model needs them)."""

from __future__ import annotations

try:
    import timm
    import transformers

    _OK = timm.__version__.startswith("0.9.") and transformers.__version__.startswith("4.4")
except ImportError:
    _OK = False

collect_ignore_glob = [] if _OK else ["test_*.py"]
