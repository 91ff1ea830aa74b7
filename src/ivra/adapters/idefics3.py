"""Idefics3 and SmolVLM (SmolVLA's backbone): pixel shuffle merges s x s patches into one token.

The models drop all-zero padding images before the vision tower, so the captured keys belong to real images only,
in the order their tokens appear. Patches are mapped to tokens by running the model's own ``pixel_shuffle`` on
the keys (so the grouping is exactly the model's) and averaging the s*s patch keys of each token.
"""

from __future__ import annotations

from ivra.adapters.base import Adapter, ImageBlock, register


@register
class Idefics3Adapter(Adapter):
    """Default ``affinity_layer``: the last encoder layer."""

    name = "idefics3"
    model_classes = ("Idefics3ForConditionalGeneration", "Idefics3Model")
    lm_layer_paths = ("model.text_model.layers", "text_model.layers")
    vision_layer_paths = ("model.vision_model.encoder.layers", "vision_model.encoder.layers")

    def image_blocks(self, model, records):
        inner = getattr(model, "model", model)
        scale = inner.config.scale_factor
        blocks = []
        for record in records:
            keys = record["keys"].contiguous()  # (n_images, n_patches, Dk); pixel_shuffle uses .view
            dk = keys.shape[-1]
            shuffled = inner.connector.pixel_shuffle(keys, scale)  # (n_images, n_patches / s^2, s^2 * Dk)
            merged = shuffled.reshape(*shuffled.shape[:2], scale * scale, dk).mean(-2)
            blocks.extend(ImageBlock(k) for k in merged)
        return blocks


@register
class SmolVLMAdapter(Idefics3Adapter):
    name = "smolvlm"
    model_classes = ("SmolVLMForConditionalGeneration", "SmolVLMModel")
