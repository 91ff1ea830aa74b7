"""ivra: training-free IVRA affinity-guided visual-token pooling for Vision-Language-Action policies.

Usage::

    import ivra
    model, inputs = ivra.tiny.build("llava")        # or your own model; ivra.tiny.families() lists the tiny ones
    with ivra.attach(model, ivra.IVRAConfig(layer=1, lam=0.3)) as handle:
        out = model(**inputs)
    print(handle.stats)
"""

import importlib

from ivra.adapters import IVRAError
from ivra.config import IVRAConfig
from ivra.core import affinity, pool_visual_tokens
from ivra.engine import IVRAHandle, attach

__version__ = "0.1.0"


def __getattr__(name: str):
    """``ivra.tiny`` (tiny random-weight models of the real classes) on first use, so ``import ivra`` stays light."""
    if name == "tiny":
        return importlib.import_module("ivra.tiny")
    raise AttributeError(f"module 'ivra' has no attribute {name!r}")


__all__ = ["IVRAConfig", "IVRAError", "IVRAHandle", "affinity", "attach", "pool_visual_tokens", "__version__"]
