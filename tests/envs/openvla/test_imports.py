"""This package imports on the environment's old transformers, with every adapter and the presets."""

from __future__ import annotations

import transformers

import ivra
from ivra.adapters import list_adapters


def test_ivra_imports_with_every_adapter():
    assert transformers.__version__.startswith(("4.37", "4.40"))
    assert {"openvla", "llara", "flower", "llava", "florence2"} <= set(list_adapters())
    assert ivra.IVRAConfig.parse("preset=flower").position == "post"
    assert ivra.IVRAConfig.preset("llara") == ivra.IVRAConfig(layer=20, lam=0.3)
