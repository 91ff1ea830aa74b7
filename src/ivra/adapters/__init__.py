"""Adapters: what IVRA needs to know about each model family, behind a registry.

Built in: llava, paligemma, idefics3, smolvlm, qwen2_5_vl, florence2, lerobot's smolvla and pi0 (pi0.5), and the
paper's systems openvla, llara and flower. Add your own with
``@ivra.adapters.register`` on an :class:`Adapter` subclass.
"""

from ivra.adapters import florence2, idefics3, lerobot, llava, paligemma, qwen2_vl  # noqa: F401  (built-ins)
from ivra.adapters.base import (
    Adapter,
    CapturePoint,
    ImageBlock,
    IVRAError,
    detect,
    get,
    list_adapters,
    register,
)

__all__ = ["Adapter", "CapturePoint", "ImageBlock", "IVRAError", "detect", "get", "list_adapters", "register"]

# the paper's own systems (their model code lives in pinned environments; these modules import only torch)
from ivra.adapters import flower, llara, openvla  # noqa: E402, F401
