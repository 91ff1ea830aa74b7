"""ivra: training-free IVRA affinity-guided visual-token pooling for Vision-Language-Action policies.

Usage::

    import ivra
    model, inputs = ivra.tiny.build("llava")        # or your own model; ivra.tiny.families() lists the tiny ones
    with ivra.attach(model, ivra.IVRAConfig(layer=1, lam=0.3)) as handle:
        out = model(**inputs)
    print(handle.stats)
"""

import importlib
import importlib.util

__version__ = "0.1.0"

#: the public names and the modules that define them, imported on first use (PEP 562): ``import ivra`` and any
#: ``ivra.<module>`` that does not need torch stay free of torch (the plug-ins other tools load at start-up,
#: :mod:`ivra.integrations`, rely on it)
_LAZY = {
    "IVRAConfig": "ivra.config",
    "IVRAError": "ivra.adapters",
    "IVRAHandle": "ivra.engine",
    "attach": "ivra.engine",
    "affinity": "ivra.core",
    "pool_visual_tokens": "ivra.core",
}


def __getattr__(name: str):
    """The public API and the subpackages (``ivra.tiny``: tiny random-weight models of the real classes, ``ivra.adapters`` ...)
    on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"ivra.{name}") is not None:
        return importlib.import_module(
            f"ivra.{name}"
        )  # ivra.adapters, ivra.tiny, ... as the eager import gave
    raise AttributeError(f"module 'ivra' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["IVRAConfig", "IVRAError", "IVRAHandle", "affinity", "attach", "pool_visual_tokens", "__version__"]
