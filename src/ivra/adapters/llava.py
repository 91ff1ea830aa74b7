"""LLaVA (LLaRA's base): CLIP/SigLIP tower, features of ``vision_feature_layer`` projected, CLS dropped."""

from __future__ import annotations

from ivra.adapters.base import Adapter, ImageBlock, register


@register
class LlavaAdapter(Adapter):
    """Default ``affinity_layer``: the encoder layer whose *input* is the hidden state LLaVA projects.

    LLaVA projects ``hidden_states[vision_feature_layer]`` (default -2). ``hidden_states[k]`` is the input of
    ``encoder.layers[k]``, so with -2 the default is ``encoder.layers[-1]``, whose key projection sees exactly the
    projected features. A list of feature layers (multi-layer LLaVA variants) uses the deepest one.
    With ``vision_feature_select_strategy="default"`` the first (CLS) position is dropped by LLaVA, and from the keys
    here; with ``"full"`` a CLIP CLS token stays in the sequence and is left alone.
    """

    name = "llava"
    model_classes = ("LlavaForConditionalGeneration", "LlavaModel")
    lm_layer_paths = ("model.language_model.layers", "language_model.layers")
    vision_layer_paths = (
        "model.vision_tower.encoder.layers",
        "model.vision_tower.vision_model.encoder.layers",
        "vision_tower.encoder.layers",
        "vision_tower.vision_model.encoder.layers",
    )

    def default_affinity_layer(self, model):
        n_layers = len(self.vision_layers(model))
        feature_layer = model.config.vision_feature_layer
        if isinstance(feature_layer, (list, tuple)):
            feature_layer = max(k % (n_layers + 1) for k in feature_layer)
        return min(feature_layer % (n_layers + 1), n_layers - 1)

    def image_blocks(self, model, records):
        strategy = model.config.vision_feature_select_strategy
        tower = getattr(model, "model", model).vision_tower
        has_cls = hasattr(
            getattr(tower, "embeddings", None) or tower.vision_model.embeddings, "class_embedding"
        )
        blocks = []
        for record in records:
            keys = record["keys"]
            for k in keys if keys.dim() == 3 else keys.unsqueeze(0):
                if strategy == "default":
                    blocks.append(ImageBlock(k[1:]))
                elif has_cls:
                    blocks.append(ImageBlock(k[1:], skip_before=1))
                else:
                    blocks.append(ImageBlock(k))
        return blocks
