"""Qwen2.5-VL: one flat patch sequence for all images, window-permuted inside the tower, merged 2x2.

Inside the tower, patches are grouped in merge units of ``spatial_merge_size**2`` consecutive patches (one LLM
token each) and the units are permuted into attention-window order. Keys captured there are averaged per merge
unit, then put back in the LLM's order with the inverse of the model's own window index, then split per image by
``grid_thw``. Keys live in the fused ``attn.qkv`` projection (layout [q | k | v]).
"""

from __future__ import annotations

import torch

from ivra.adapters.base import Adapter, CapturePoint, ImageBlock, first_arg, register
from ivra.core import group_mean

_SLICE = {"query": 0, "key": 1, "value": 2}


def _window_index(visual, grid_thw: torch.Tensor) -> torch.Tensor:
    if hasattr(visual, "get_window_index"):  # transformers 4.x
        return visual.get_window_index(grid_thw)[0]
    from transformers.vision_utils import get_vision_window_index

    return get_vision_window_index(
        grid_thw,
        spatial_merge_size=visual.spatial_merge_size,
        window_size=visual.window_size,
        patch_size=visual.patch_size,
    )[0]


@register
class Qwen2_5_VLAdapter(Adapter):
    """Default ``affinity_layer``: the last vision block. Images only (video tokens are not pooled)."""

    name = "qwen2_5_vl"
    model_classes = ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel")
    lm_layer_paths = ("model.language_model.layers", "language_model.layers")
    vision_layer_paths = ("model.visual.blocks", "visual.blocks")

    def _visual(self, model):
        return getattr(model, "model", model).visual

    def visual_token_ids(self, model):
        return [int(model.config.image_token_id)]

    def capture_points(self, model, layer, feature):
        visual = self._visual(model)
        grid = CapturePoint(
            visual, "pre", lambda m, a, kw: {"grid_thw": kw.get("grid_thw", a[1] if len(a) > 1 else None)}
        )
        block = visual.blocks[layer]
        if feature == "hidden":
            keys = CapturePoint(block, "pre", lambda m, a, kw: {"keys": first_arg(a, kw, "hidden_states")})
        else:
            part = _SLICE[feature]

            def take(m, a, kw, out):
                d = out.shape[-1] // 3
                return {"keys": out[..., part * d : (part + 1) * d]}

            keys = CapturePoint(block.attn.qkv, "forward", take)
        return [grid, keys]

    def image_blocks(self, model, records):
        visual = self._visual(model)
        unit = visual.spatial_merge_size**2
        blocks, grid = [], None
        for record in records:
            if "grid_thw" in record:
                grid = record["grid_thw"]
                continue
            merged = group_mean(record["keys"], unit)  # merge units, still in window order
            order = torch.argsort(_window_index(visual, grid).to(merged.device))
            merged = merged[order]
            sizes = (grid.prod(-1) // unit).tolist()
            blocks.extend(ImageBlock(k) for k in merged.split(sizes))
        return blocks
