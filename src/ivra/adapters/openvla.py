"""OpenVLA and OpenVLA-OFT (Prismatic remote code; timm DINOv2 + SigLIP towers, a Llama-2 language model).

Where IVRA meets the model:

* keys: the fused ``blocks[i].attn.qkv`` of a timm tower (``vision_backbone.featurizer`` / ``.fused_featurizer``;
  with OFT's FiLM the towers sit under ``vision_backbone.vision_backbone`` and ``blocks[i].block.attn.qkv``), sliced
  to the key third; the tower's prefix tokens (DINOv2: CLS + 4 registers, SigLIP: none) are
  dropped, leaving the 16x16 patch grid in raster order, one key per visual token;
* visual tokens: no placeholder ids. OpenVLA splices the projected patches right after the first token through
  ``inputs_embeds``, so with ``K`` images (1 for OpenVLA, 2 for OFT's third-person + wrist views) the visual tokens
  are LLM positions ``1 .. 1 + 256 K``; OFT's proprio token after them is left alone. The count comes from the
  keys captured in the same pass, so a mismatch cannot go unnoticed;
* edit: a pre-hook on ``language_model.model.layers[L]``, prefill only (decode steps carry one token and the cache).

Which tower gives the affinity (``tower``), a choice the paper leaves open:

* ``"dinov2"`` (default): DINOv2's patch keys are the ones whose self-similarity is known to follow objects and
  parts (self-supervised, and the register tokens remove the high-norm artefact patches that otherwise take the
  affinity of background patches), which is what IVRA's hint is meant to carry; SigLIP is trained for global
  image-text alignment and its patch keys localise worse;
* ``"siglip"``: the SigLIP tower's keys;
* ``"both"``: each tower's keys L2-normalised, divided by sqrt(2) and concatenated, so the cosine affinity is the
  *mean* of the two towers' cosine affinities (the towers' grids align one to one).

``affinity_layer`` indexes the selected tower's blocks (with ``"both"``, DINOv2's; SigLIP takes the block at the
same distance from its end). Default: the last block, whose input is exactly the second-to-last block's output,
the feature OpenVLA projects (timm runs every block in ``get_intermediate_layers``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ivra.adapters.base import Adapter, CapturePoint, ImageBlock, IVRAError, register, resolve

TOWERS = ("dinov2", "siglip", "both")
_SLICE = {"query": 0, "key": 1, "value": 2}


def continues_cache(kwargs: dict) -> bool:
    """Whether a call continues a non-empty KV cache: a ``Cache`` object or a legacy tuple of (k, v) per layer."""
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    if cache is None:
        return False
    if isinstance(cache, (tuple, list)):
        return len(cache) > 0 and cache[0] is not None and cache[0][0].shape[-2] > 0
    try:
        return int(cache.get_seq_length()) > 0
    except Exception:
        return False


@register
class OpenVLAAdapter(Adapter):
    """See the module docstring. ``OpenVLAAdapter(tower="dinov2" | "siglip" | "both")``."""

    name = "openvla"
    model_classes = ("OpenVLAForActionPrediction",)
    lm_layer_paths = ("language_model.model.layers",)

    def __init__(self, tower: str = "dinov2"):
        if tower not in TOWERS:
            raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
        self.tower = tower

    # -- towers ----------------------------------------------------------------------------------------------------
    def towers(self, model) -> dict[str, torch.nn.Module]:
        """{"dinov2": tower, "siglip": tower} as far as the model has them (named from ``timm_model_ids``)."""
        backbone = resolve(model, ("vision_backbone",))
        if not hasattr(backbone, "featurizer") and hasattr(backbone, "vision_backbone"):
            backbone = backbone.vision_backbone  # OFT's FiLM wrapper keeps the original backbone inside
        found = [backbone.featurizer]
        if getattr(backbone, "fused_featurizer", None) is not None:
            found.append(backbone.fused_featurizer)
        ids = list(getattr(model.config, "timm_model_ids", []) or [])
        named = {}
        for i, tower in enumerate(found):
            tid = ids[i].lower() if i < len(ids) else ""
            if "dino" in tid:
                named["dinov2"] = tower
            elif "siglip" in tid:
                named["siglip"] = tower
            else:  # unknown id: DINO-style towers carry prefix tokens, SigLIP none
                named["dinov2" if getattr(tower, "num_prefix_tokens", 0) else "siglip"] = tower
        return named

    def _selected(self, model) -> list[tuple[str, torch.nn.Module]]:
        named = self.towers(model)
        want = ("dinov2", "siglip") if self.tower == "both" else (self.tower,)
        missing = [w for w in want if w not in named]
        if missing:
            raise IVRAError(
                f"OpenVLA adapter: tower={self.tower!r} but the model has no {missing[0]} tower "
                f"(it has {sorted(named)}); choose tower= one of {sorted(named)}"
            )
        return [(w, named[w]) for w in want]

    def vision_layers(self, model):
        return self._selected(model)[0][1].blocks

    def default_affinity_layer(self, model) -> int:
        return len(self.vision_layers(model)) - 1

    def capture_points(self, model, layer, feature):
        depth = len(self.vision_layers(model))
        points = []
        for name, tower in self._selected(model):
            blocks = tower.blocks
            index = len(blocks) - (depth - layer)  # same distance from the end in every selected tower
            if not 0 <= index < len(blocks):
                raise IVRAError(
                    f"affinity_layer {layer} does not exist in the {name} tower ({len(blocks)} blocks)"
                )
            block = blocks[index]
            inner = getattr(block, "block", block)  # OFT's FiLM wrapper keeps the timm block as `.block`
            prefix = int(getattr(tower, "num_prefix_tokens", 0))
            if feature == "hidden":

                def hidden(m, a, kw, prefix=prefix, name=name):
                    return {"keys": a[0][:, prefix:], "tower": name}

                points.append(CapturePoint(block, "pre", hidden))
                continue
            part = _SLICE[feature]

            def take(m, a, kw, out, prefix=prefix, name=name, part=part):
                d = out.shape[-1] // 3
                return {"keys": out[:, prefix:, part * d : (part + 1) * d], "tower": name}

            points.append(CapturePoint(inner.attn.qkv, "forward", take))
        return points

    # -- images ----------------------------------------------------------------------------------------------------
    def _images(self, records) -> list[torch.Tensor]:
        """Per image (call order), the (B, 256, Dk) keys; with ``both`` the two towers' normalised keys joined."""
        per_tower: dict[str, list[torch.Tensor]] = {}
        for r in records:
            if "keys" in r:
                per_tower.setdefault(r["tower"], []).append(r["keys"])
        if not per_tower:
            return []
        if self.tower != "both":
            return next(iter(per_tower.values()))
        dino, sig = per_tower.get("dinov2", []), per_tower.get("siglip", [])
        if len(dino) != len(sig):
            raise IVRAError(
                f"IVRA could not act: {len(dino)} DINOv2 but {len(sig)} SigLIP tower calls in one pass"
            )
        images = []
        for a, b in zip(dino, sig):
            if a.shape[:2] != b.shape[:2]:
                raise IVRAError(
                    f"IVRA could not act: tower grids differ ({tuple(a.shape)} vs {tuple(b.shape)})"
                )
            scale = 1.0 / math.sqrt(2.0)
            images.append(
                torch.cat(
                    [F.normalize(a.float(), dim=-1) * scale, F.normalize(b.float(), dim=-1) * scale], -1
                )
            )
        return images

    def image_blocks(self, model, records):
        images = self._images(records)
        return [
            ImageBlock(k, sample=b) for b in range(images[0].shape[0]) for k in (img[b] for img in images)
        ]

    def locate_points(self, model):
        return []  # no placeholder ids: the layout is fixed (see visual_mask)

    def visual_mask(self, model, located, records, hidden):
        images = self._images(records)
        if not images:
            return None
        n_visual = sum(img.shape[1] for img in images)
        batch, seq = hidden.shape[:2]
        if images[0].shape[0] != batch or seq < 1 + n_visual:
            raise IVRAError(
                f"IVRA could not act: {len(images)} image(s) of {images[0].shape[1]} patches for a batch of "
                f"{images[0].shape[0]} do not fit language-model hidden states {tuple(hidden.shape[:2])} "
                "(OpenVLA puts the patches at positions 1..; chunked prefill is not supported)"
            )
        mask = torch.zeros(batch, seq, dtype=torch.bool, device=hidden.device)
        mask[:, 1 : 1 + n_visual] = True
        return mask

    def is_decode(self, module, args, kwargs):
        return continues_cache(kwargs)
