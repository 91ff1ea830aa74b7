"""LLaRA: the original LLaVA-1.5 code (``llava-torch``'s ``LlavaLlamaForCausalLM``), which splices images itself.

LLaVA's ``prepare_inputs_labels_for_multimodal`` encodes the images (CLIP ViT-L/14-336, features of
``mm_vision_select_layer``, CLS dropped with ``mm_vision_select_feature="patch"``), projects them
(``mm_projector``) and splices each image's rows into ``inputs_embeds`` where its placeholder id stood (-200;
LLaRA's fork maps ``<imageK>`` to -200-K and takes image K of the placeholder's own sample, so the text order need
not be the image order). The token embedding never sees a placeholder, so there are no ids to look for. This
adapter finds the spans **at splice time**: it records the projector's output of the model's own vision pass and
locates each image's block of rows in the ``inputs_embeds`` the language model receives (an exact match: the
splice copies the rows). Whatever the placeholder scheme (LLaVA's -200 in image order, LLaRA's -200-K in any
order, several images per sample, left or right padding), each image's keys pool the tokens of that image.

* keys: ``k_proj`` of CLIP ``encoder.layers[affinity_layer]``; default the layer whose input is the hidden state
  LLaVA projects (``layers[-1]`` for ``mm_vision_select_layer=-2``), CLS dropped;
* ``padding``: LLaVA's ``image_aspect_ratio="pad"`` letterboxes non-square frames with the processor's mean
  colour (VIMA's 256x128 frames: half of the 576 patches are padding). ``"keep"`` (default) pools every patch
  the encoder saw, as the method is published (the paper does not say it removed them; use it to reproduce);
  ``"drop"`` leaves padding patches out of the affinity: they are neither pooled nor pool anything. A patch is
  padding when every one of its pixels equals the letterbox colour after the processor's normalisation;
* decode steps (one id, a legacy tuple cache) are left alone.
"""

from __future__ import annotations

import torch

from ivra.adapters.base import Adapter, CapturePoint, ImageBlock, IVRAError, register
from ivra.adapters.openvla import continues_cache

PADDING = ("keep", "drop")
TOLERANCE = 5e-3  # in normalised pixel units; neighbouring 8-bit levels differ by ~0.014 after CLIP's std


@register
class LlaraAdapter(Adapter):
    """See the module docstring. ``LlaraAdapter(padding="keep" | "drop")``."""

    name = "llara"
    model_classes = ("LlavaLlamaForCausalLM",)
    lm_layer_paths = ("model.layers",)

    def __init__(self, padding: str = "keep"):
        if padding not in PADDING:
            raise ValueError(f"padding must be one of {PADDING}, got {padding!r}")
        self.padding = padding

    # -- parts -----------------------------------------------------------------------------------------------------
    def _tower(self, model):
        tower = model.get_model().get_vision_tower()
        if tower is None or not getattr(tower, "is_loaded", False):
            raise IVRAError(
                "LLaRA/LLaVA model without a loaded vision tower: call model.get_vision_tower().load_model() first"
            )
        return tower

    def vision_layers(self, model):
        return self._tower(model).vision_tower.vision_model.encoder.layers

    def default_affinity_layer(self, model):
        n = len(self.vision_layers(model))
        select = int(getattr(self._tower(model), "select_layer", -2))
        return min(select % (n + 1), n - 1)

    def capture_points(self, model, layer, feature):
        tower = self._tower(model)
        points = super().capture_points(model, layer, feature)
        points.append(
            CapturePoint(model.get_model().mm_projector, "forward", lambda m, a, kw, out: {"features": out})
        )
        if self.padding == "drop":

            def pixels(m, a, kw):
                return {"pixels": a[0] if a else kw["pixel_values"]}

            points.insert(0, CapturePoint(tower.vision_tower, "pre", pixels))
        return points

    def locate_points(self, model):
        def on_lm(module, args, kwargs):
            embeds = kwargs.get("inputs_embeds")
            return None if embeds is None else {"embeds": embeds}

        return [CapturePoint(model.get_model(), "pre", on_lm)]

    def is_decode(self, module, args, kwargs):
        return continues_cache(kwargs)

    # -- where the images were spliced ------------------------------------------------------------------------------
    def _images(self, records):
        """Per image, in vision-pass order: (keys (T+cls, Dk), projected rows (T', D), pixels (3, H, W) | None)."""
        images, keys, pixels = [], [], []
        for r in records:
            if "pixels" in r:
                pixels.append(r["pixels"])
            elif "keys" in r:
                keys.append(r["keys"])
            elif "features" in r:
                k = torch.cat(keys) if keys else None
                p = torch.cat(pixels) if pixels else None
                feats = r["features"]
                if k is None or k.shape[0] != feats.shape[0]:
                    raise IVRAError(
                        f"IVRA could not act: {0 if k is None else k.shape[0]} images went through the vision layer "
                        f"but the projector returned {feats.shape[0]}"
                    )
                images.extend(zip(k, feats, p if p is not None else [None] * len(k)))
                keys, pixels = [], []
        return images

    def visual_mask(self, model, located, records, hidden):
        images = self._images(records)
        if not images:
            return None
        embeds = next((r["embeds"] for r in reversed(located) if "embeds" in r), None)
        if embeds is None:
            raise IVRAError(
                "IVRA could not act: the images were encoded but the language model got no inputs_embeds "
                "(LLaVA splices image features into inputs_embeds)"
            )
        batch, seq = embeds.shape[:2]
        mask = torch.zeros(batch, seq, dtype=torch.bool, device=embeds.device)
        spans = []
        for i, (_, feats, _) in enumerate(images):
            n = feats.shape[0]
            feats = feats.to(embeds.dtype)
            first = (embeds == feats[0]).all(-1).nonzero().tolist()
            found = None
            for b, s in first:
                if s + n <= seq and not mask[b, s : s + n].any() and torch.equal(embeds[b, s : s + n], feats):
                    found = (b, s)
                    break
            if found is None:
                raise IVRAError(
                    f"IVRA could not act: image {i}'s {n} projected features were not found in the inputs_embeds "
                    f"{tuple(embeds.shape)} the language model received (truncated by tokenizer_model_max_length, "
                    "or features changed after the projector?)"
                )
            mask[found[0], found[1] : found[1] + n] = True
            spans.append(found)
        records.append(
            {"spans": spans}
        )  # read by image_blocks (same pass; the engine hands it the same list)
        return mask

    def image_blocks(self, model, records):
        images = self._images(records)
        spans = next(r["spans"] for r in records if "spans" in r)
        cls = str(getattr(self._tower(model), "select_feature", "patch")) == "patch"
        order = sorted(range(len(images)), key=lambda i: spans[i])
        blocks = []
        for i in order:
            keys, feats, pixels = images[i]
            sample = spans[i][0]
            if cls:
                keys = keys[1:]
                skip = 0
            else:
                keys, skip = keys[1:], 1  # "cls_patch": the CLS feature stays in the sequence, left alone
            if keys.shape[0] + skip != feats.shape[0]:
                raise IVRAError(
                    f"IVRA could not act: {keys.shape[0]} patch keys for an image of {feats.shape[0]} tokens"
                )
            if self.padding == "drop":
                real = ~self._padding_patches(model, pixels, keys.shape[0])
                if not bool(real.any()):
                    blocks.append(ImageBlock(keys, skip_before=skip, sample=sample, pool=False))
                    continue
                if not bool(real.all()):
                    index = real.nonzero().squeeze(1) + skip
                    blocks.append(ImageBlock(keys[real], sample=sample, index=index, length=feats.shape[0]))
                    continue
            blocks.append(ImageBlock(keys, skip_before=skip, sample=sample))
        return blocks

    def _padding_patches(self, model, pixels, n_patches):
        """(n_patches,) bool: every pixel of the patch equals the letterbox colour (processor mean, normalised)."""
        proc = getattr(self._tower(model), "image_processor", None)
        if proc is None:
            raise IVRAError("padding='drop' needs the vision tower's image_processor (its mean colour)")
        mean = torch.tensor(proc.image_mean, dtype=torch.float64)
        std = torch.tensor(proc.image_std, dtype=torch.float64)
        fill = (torch.floor(mean * 255) / 255 - mean) / std  # expand2square fills int(mean * 255)
        grid = int(round(n_patches**0.5))
        c, h, w = pixels.shape
        p = h // grid
        x = pixels.double().reshape(c, grid, p, grid, p)
        close = ((x - fill.to(x.device).view(c, 1, 1, 1, 1)).abs() <= TOLERANCE).all(0)  # (grid, p, grid, p)
        return close.permute(0, 2, 1, 3).reshape(grid * grid, -1).all(-1).cpu()
