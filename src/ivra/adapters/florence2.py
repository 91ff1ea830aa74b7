"""Florence-2 (FLOWER's backbone): DaViT tower, IVRA acts in the BART *encoder* where the visual tokens live.

Each image becomes one global token (the spatial mean, placed *first* by the projection's
``cat([spatial_avg_pool, temporal_avg_pool])``) followed by H*W patch tokens; the global token is left alone.
``affinity_layer`` indexes the blocks of the last DaViT stage (the only one at the token resolution). Its window
attention computes keys in a fused ``qkv`` over padded, window-permuted patches: the capture undoes the
window partition and the padding, giving keys in raster order.

Two module layouts are served (the adapter tells them apart by the model's own structure):

* transformers' native ``Florence2ForConditionalGeneration`` (transformers >= 5): ``model.vision_tower``,
  ``model.language_model.encoder.layers``; each block has ``spatial_block.window_attn`` with ``qkv`` and reads
  (B, H, W, C); the image tokens replace ``image_token_id`` placeholders in the input ids.
* the remote code published with ``microsoft/Florence-2-large`` (``trust_remote_code``, transformers 4.4x-4.51):
  ``vision_tower.blocks[stage][block]`` is ``MySequential(OrderedDict(spatial_block, channel_block))``, the window
  attention is a ``PreNorm`` whose ``.fn`` holds ``qkv`` and reads (B, H*W, C) plus ``size=(H, W)``; the encoder is
  ``language_model.model.encoder`` (its layers return tuples). There are no image placeholder ids: the model puts
  the image tokens first, ``[image (1 + H*W), prompt]`` (``_merge_input_ids_with_image_features``), so the visual
  positions are the first ``1 + H*W`` encoder positions of each sample (one image per sample). One pass is one
  encoder call (``generate`` runs the encoder once and never calls the model's ``forward``).
"""

from __future__ import annotations

import torch

from ivra.adapters.base import Adapter, CapturePoint, ImageBlock, IVRAError, first_arg, register, resolve

_SLICE = {"query": 0, "key": 1, "value": 2}


def _unwindow(windows, batch, height, width, window):
    """(batch * n_windows, window*window, C) in window order -> (batch, height*width, C) in raster order."""
    c = windows.shape[-1]
    ph, pw = -(-height // window) * window, -(-width // window) * window
    x = windows.reshape(batch, ph // window, pw // window, window, window, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, ph, pw, c)
    return x[:, :height, :width].reshape(batch, height * width, c)


def is_remote(model) -> bool:
    """The remote-code layout (``_encode_image``, ``language_model.model.encoder``), not transformers' native one."""
    return hasattr(model, "_encode_image") and hasattr(model, "vision_tower")


def _window_shape(args, kwargs) -> tuple[int, int, int]:
    """(B, H, W) of a window attention's input: native (B, H, W, C); remote (B, H*W, C) with ``size=(H, W)``."""
    x = first_arg(args, kwargs, "hidden_states")
    if x is None:
        x = kwargs.get("x")
    if x.dim() == 4:
        return tuple(x.shape[:3])
    size = args[1] if len(args) > 1 else kwargs["size"]
    return (x.shape[0], int(size[0]), int(size[1]))


@register
class Florence2Adapter(Adapter):
    """Default ``affinity_layer``: the last block of the last stage (the authors' FLOWER integration)."""

    name = "florence2"
    model_classes = ("Florence2ForConditionalGeneration", "Florence2Model")
    lm_layer_paths = (
        "model.language_model.encoder.layers",
        "language_model.encoder.layers",
        "language_model.model.encoder.layers",  # remote code
    )
    vision_layer_paths = ("model.vision_tower.blocks", "vision_tower.blocks")

    def is_decode(self, module, args, kwargs):
        """A decoder call that receives ``encoder_outputs`` continues an encoder pass IVRA already acted in."""
        return kwargs.get("encoder_outputs") is not None or super().is_decode(module, args, kwargs)

    # -- remote layout: one pass = one encoder call, the image tokens first --------------------------------------------
    def pass_modules(self, model):
        if is_remote(model):
            return [resolve(model, ("language_model.model.encoder",))]
        return super().pass_modules(model)

    def locate_points(self, model):
        return [] if is_remote(model) else super().locate_points(model)

    def visual_mask(self, model, located, records, hidden):
        if not is_remote(model):
            return super().visual_mask(model, located, records, hidden)
        calls = [(r["shape"][0], r["shape"][1] * r["shape"][2]) for r in records if "shape" in r]
        calls = calls or [
            tuple(r["keys"].shape[:2]) for r in records if "keys" in r
        ]  # affinity_feature="hidden"
        if not calls:
            return None
        batch, n_patches = calls[-1]
        if len(calls) > 1 or batch != hidden.shape[0]:
            raise IVRAError(
                f"IVRA could not act: {sum(c[0] for c in calls)} images in {len(calls)} vision pass(es) for an "
                f"encoder batch of {hidden.shape[0]}: the remote Florence-2 puts one image first in each sample "
                "(several cameras per sample, as FLOWER does: attach to the FLOWER model, adapter 'flower')"
            )
        n_visual = 1 + n_patches
        if hidden.shape[1] < n_visual:
            raise IVRAError(
                f"IVRA could not act: an image gives {n_visual} tokens but the encoder input has {hidden.shape[1]}"
            )
        mask = torch.zeros(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        mask[:, :n_visual] = True
        return mask

    # -- vision side -----------------------------------------------------------------------------------------------
    def vision_layers(self, model):
        return super().vision_layers(model)[-1]

    def _window_attention(self, block):
        """The module holding ``qkv`` (remote: ``spatial_block.window_attn.fn``, native: ``spatial_block.window_attn``)."""
        attn = block.spatial_block.window_attn
        return getattr(attn, "fn", attn)

    def capture_points(self, model, layer, feature):
        attn = self._window_attention(self.vision_layers(model)[layer])
        if feature == "hidden":

            def hidden(m, a, kw):
                x = first_arg(a, kw, "hidden_states")
                return {"keys": x.reshape(x.shape[0], -1, x.shape[-1])}

            return [CapturePoint(attn, "pre", hidden)]
        shape = CapturePoint(attn, "pre", lambda m, a, kw: {"shape": _window_shape(a, kw)})
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
