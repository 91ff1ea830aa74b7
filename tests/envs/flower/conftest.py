"""The `flower` environment's tests (nox session `flower`): collected only where FLOWER's stack is installed
(transformers 4.51, timm, torchvision; elsewhere, e.g. the core env, this directory is ignored)."""

from __future__ import annotations

try:
    import timm  # noqa: F401
    import torchvision  # noqa: F401
    import transformers

    _OK = transformers.__version__.startswith("4.51")
except ImportError:
    _OK = False

collect_ignore_glob = [] if _OK else ["test_*.py"]
