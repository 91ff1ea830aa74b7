"""FLOWER (intuitive-robots): Florence-2 with its decoder deleted; IVRA acts in the BART encoder.

FLOWER encodes each camera separately with Florence-2's DaViT (``vlm._encode_image``: one global token, the spatial
mean, then N patch tokens) and runs the encoder on ``inputs_embeds = [static (1+N), gripper (1+N), <Flow>, text]``.
There are no placeholder ids: the image tokens are the first ``sum(1 + N)`` encoder positions, one block per camera
in the order the cameras were encoded, and the count comes from the keys captured in the same step.

* keys: the fused ``qkv`` of the last DaViT stage's **channel** attention (the authors' choice), key third, one
  per patch in raster order; ``affinity_layer`` indexes the blocks of the last stage (default: the last one; in
  Florence-2-large that stage has one block, ``blocks[-1][0]``, the authors' module);
* every camera is its own block, its global token left alone (``skip_before=1``);
* one vision pass: the keys come from FLOWER's own ``_encode_image`` calls (the released integration ran the tower
  a second time per view);
* ``authors_spans=True`` (opt-in, for comparison runs only) reproduces the released integration's spans exactly:
  camera c's N keys are applied to positions ``[c N, (c + 1) N)``, which for the static view takes in the global
  token and drops its last patch, and shifts every later view by one token per view before it (the gripper span
  starts on the static view's last patch); the keys themselves are the same (the second pass recomputed them);
* both module namings are served: the remote code's (``vlm.vision_tower.blocks[-1][0].channel_block.channel_attn.fn.qkv``:
  each block a ``MySequential`` with named children ``spatial_block``/``channel_block``, ``channel_attn`` a
  ``PreNorm(norm, fn, drop_path)`` whose ``fn`` holds ``qkv``; ``vlm.language_model.model.encoder.layers`` returning
  tuples; recorded from the real code in ``tests/fixtures/real/flower.json``) and transformers 5's native Florence-2
  (``vlm.model.vision_tower.blocks[-1][0].channel_block.channel_attn.qkv``, ``vlm.model.language_model.encoder``).
  The adapter attaches to FLOWER's model (``.vlm``) or to the Florence-2 model itself.

Not supported (strict mode raises on the count mismatch): FLOWER's modality-dropout / modality-ablation paths that
remove image tokens before the encoder, and observation histories of several frames per camera.

The paper's FLOWER setting is :meth:`ivra.IVRAConfig.preset` ``("flower")``: after the last encoder layer
(``layer=-1, position="post"``), lam 0.2, raw cosine.
"""

from __future__ import annotations

import torch

from ivra.adapters.base import Adapter, CapturePoint, ImageBlock, IVRAError, register, resolve

_SLICE = {"query": 0, "key": 1, "value": 2}


def _vlm(model):
    return getattr(model, "vlm", model)


@register
class FlowerAdapter(Adapter):
    """See the module docstring. ``FlowerAdapter(authors_spans=False)``."""

    name = "flower"
    model_classes = ("FLOWERVLA",)

    def __init__(self, authors_spans: bool = False):
        self.authors_spans = bool(authors_spans)

    def _remote(self, model) -> bool:
        return hasattr(_vlm(model), "_encode_image")

    def lm_layers(self, model):
        vlm = _vlm(model)
        return resolve(vlm, ("language_model.model.encoder.layers", "model.language_model.encoder.layers"))

    def encoder(self, model):
        return resolve(_vlm(model), ("language_model.model.encoder", "model.language_model.encoder"))

    def attention(self, layer):
        return resolve(getattr(layer, "layer", layer), ("self_attn",))

    def pass_modules(self, model):
        return [self.encoder(model)]

    def is_decode(self, module, args, kwargs):
        return False  # the encoder runs once per step; FLOWER has no decoder

    def vision_layers(self, model):
        return resolve(_vlm(model), ("vision_tower.blocks", "model.vision_tower.blocks"))[-1]

    def _channel_attention(self, block):
        """The channel attention (the module holding ``qkv``) of one DaViT block, in either layout.

        Remote code: the block is ``MySequential(OrderedDict(spatial_block=..., channel_block=...))`` (so it has both
        ``.channel_block`` and ``[1]``) and ``channel_attn`` is a ``PreNorm`` whose ``.fn`` is the attention; native
        (transformers 5): ``channel_block.channel_attn`` is the attention itself (its norm is ``channel_block.norm1``).
        """
        channel = getattr(block, "channel_block", None)
        if channel is None:
            channel = block[1]
        attn = channel.channel_attn
        return getattr(attn, "fn", attn)

    def capture_points(self, model, layer, feature):
        attn = self._channel_attention(self.vision_layers(model)[layer])
        if feature == "hidden":  # the normalised tokens the channel attention reads
            return [CapturePoint(attn, "pre", lambda m, a, kw: {"keys": a[0] if a else kw["hidden_states"]})]
        part = _SLICE[feature]

        def take(m, a, kw, out):
            d = out.shape[-1] // 3
            return {"keys": out[..., part * d : (part + 1) * d]}

        return [CapturePoint(attn.qkv, "forward", take)]

    def locate_points(self, model):
        return []

    def _cameras(self, records):
        """Per camera call (in call order): keys (B, N, Dk)."""
        return [r["keys"] for r in records if "keys" in r]

    def visual_mask(self, model, located, records, hidden):
        cams = self._cameras(records)
        if not cams:
            return None
        if any(c.shape[0] != hidden.shape[0] for c in cams):
            raise IVRAError(
                f"IVRA could not act: camera passes of {[c.shape[0] for c in cams]} images for an encoder batch of "
                f"{hidden.shape[0]}: one image per sample and camera is supported (no frame history)"
            )
        n_visual = sum(1 + c.shape[1] for c in cams)
        if hidden.shape[1] < n_visual:
            raise IVRAError(
                f"IVRA could not act: {len(cams)} camera(s) give {n_visual} image tokens but the encoder input "
                f"has {hidden.shape[1]} positions"
            )
        mask = torch.zeros(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        mask[:, :n_visual] = True
        return mask

    def image_blocks(self, model, records):
        cams = self._cameras(records)
        blocks = []
        for b in range(cams[0].shape[0]):
            for c, cam in enumerate(cams):
                if self.authors_spans:  # camera c's keys on [c N, (c+1) N); the last C positions left alone
                    last = c == len(cams) - 1
                    blocks.append(ImageBlock(cam[b], skip_after=len(cams) if last else 0, sample=b))
                else:
                    blocks.append(ImageBlock(cam[b], skip_before=1, sample=b))
        return blocks
