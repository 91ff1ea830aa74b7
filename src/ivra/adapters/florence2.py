"""Florence-2 (FLOWER's backbone): DaViT tower, IVRA acts in the BART *encoder* where the visual tokens live.

Each image becomes one global token (the spatial mean, placed *first* by the projector's
``cat([spatial_mean, per_patch])``) followed by H*W patch tokens; the global token is left alone.
``affinity_layer`` indexes the blocks of the last DaViT stage (the only one at the token resolution). Its window
attention computes keys in a fused ``qkv`` over padded, window-permuted patches: the capture undoes the
window partition and the padding, giving keys in raster order.
"""

from __future__ import annotations

from ivra.adapters.base import Adapter, CapturePoint, ImageBlock, first_arg, register

_SLICE = {"query": 0, "key": 1, "value": 2}


def _unwindow(windows, batch, height, width, window):
    """(batch * n_windows, window*window, C) in window order -> (batch, height*width, C) in raster order."""
    c = windows.shape[-1]
    ph, pw = -(-height // window) * window, -(-width // window) * window
    x = windows.reshape(batch, ph // window, pw // window, window, window, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, ph, pw, c)
    return x[:, :height, :width].reshape(batch, height * width, c)


@register
class Florence2Adapter(Adapter):
    """Default ``affinity_layer``: the last block of the last stage (the authors' FLOWER integration)."""

    name = "florence2"
    model_classes = ("Florence2ForConditionalGeneration", "Florence2Model")
    lm_layer_paths = ("model.language_model.encoder.layers", "language_model.encoder.layers")
    vision_layer_paths = ("model.vision_tower.blocks", "vision_tower.blocks")

    def is_decode(self, module, args, kwargs):
        """A decoder call that receives ``encoder_outputs`` continues an encoder pass IVRA already acted in."""
        return kwargs.get("encoder_outputs") is not None or super().is_decode(module, args, kwargs)

    def vision_layers(self, model):
        return super().vision_layers(model)[-1]

    def capture_points(self, model, layer, feature):
        attn = self.vision_layers(model)[layer].spatial_block.window_attn
        if feature == "hidden":

            def hidden(m, a, kw):
                x = first_arg(a, kw, "hidden_states")
                return {"keys": x.reshape(x.shape[0], -1, x.shape[-1])}

            return [CapturePoint(attn, "pre", hidden)]
        shape = CapturePoint(
            attn, "pre", lambda m, a, kw: {"shape": tuple(first_arg(a, kw, "hidden_states").shape[:3])}
        )
        part = _SLICE[feature]

        def take(m, a, kw, out):
            d = out.shape[-1] // 3
            return {"windows": out[..., part * d : (part + 1) * d], "window": attn.window_size}

        return [shape, CapturePoint(attn.qkv, "forward", take)]

    def image_blocks(self, model, records):
        blocks, shape = [], None
        for record in records:
            if "shape" in record:
                shape = record["shape"]
                continue
            keys = record.get("keys")
            if keys is None:
                keys = _unwindow(record["windows"], *shape, record["window"])
            blocks.extend(ImageBlock(k, skip_before=1) for k in keys)  # global token first
        return blocks
