"""This package imports on FLOWER's stack with every adapter, and the stack is the one FLOWER's own code runs on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import transformers

import ivra
from ivra.adapters import list_adapters


def test_ivra_imports_with_every_adapter():
    assert transformers.__version__ == "4.51.3"  # the remote Florence-2 code's range (4.4x-4.51)
    assert {"flower", "florence2", "openvla", "llara"} <= set(list_adapters())
    assert ivra.IVRAConfig.parse("preset=flower").position == "post"


def test_flowers_action_head_attention_call_runs_on_this_torch():
    """FLOWER's DiT self-attention passes an explicit attn_mask together with is_causal=True
    (flower/models/networks/transformers.py, FlowerAttention.forward); torch 2.14 rejects that, 2.13 runs it."""
    q = torch.randn(1, 2, 4, 8)
    mask = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)[None, None]
    out = F.scaled_dot_product_attention(q, q, q, attn_mask=~mask, is_causal=True)
    assert out.shape == q.shape and torch.__version__.startswith("2.13.")


def test_timm_and_torchvision_import_beside_this_torch():
    import timm.layers  # FLOWER: timm.layers.mlp.Mlp; the remote Florence-2: timm.models.layers.DropPath
    import torchvision.transforms  # FLOWER's LIBERO transforms

    assert timm.layers.DropPath and torchvision.transforms.Resize
