"""ivra: training-free IVRA affinity-guided visual-token pooling for Vision-Language-Action policies.

Usage::

    import ivra
    cfg = ivra.IVRAConfig(layer=20, lam=0.3)
    with ivra.attach(model, cfg) as handle:
        out = model.generate(**inputs)
"""

from ivra.adapters import IVRAError
from ivra.config import IVRAConfig
from ivra.core import affinity, pool_visual_tokens
from ivra.engine import IVRAHandle, attach

__version__ = "0.1.0"

__all__ = ["IVRAConfig", "IVRAError", "IVRAHandle", "affinity", "attach", "pool_visual_tokens", "__version__"]
