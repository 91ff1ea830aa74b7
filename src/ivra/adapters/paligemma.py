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

    def embedding(self, model):
        """PaliGemma zeroes image-token ids >= the text vocab size (pi0-style configs, where the image token id
        equals the vocab size) before its embedding look-up: read the ids where the model receives them."""
        inner = getattr(model, "model", model)
        if model.config.image_token_id >= model.config.text_config.vocab_size:
            return inner
        return super().embedding(model)
