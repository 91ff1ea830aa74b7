"""PaliGemma (pi0's backbone): SigLIP tower, every patch becomes one token (no CLS)."""

from __future__ import annotations

from ivra.adapters.base import Adapter, register


@register
class PaliGemmaAdapter(Adapter):
    """Default ``affinity_layer``: the last SigLIP layer (PaliGemma projects the post-layernormed output)."""

    name = "paligemma"
    model_classes = ("PaliGemmaForConditionalGeneration", "PaliGemmaModel")
    lm_layer_paths = ("model.language_model.layers", "language_model.layers")
    vision_layer_paths = (
        "model.vision_tower.encoder.layers",
        "model.vision_tower.vision_model.encoder.layers",
        "vision_tower.encoder.layers",
        "vision_tower.vision_model.encoder.layers",
    )
