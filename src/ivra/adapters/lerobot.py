"""lerobot's flow-matching VLAs: SmolVLA (SmolVLM + action expert) and pi0 / pi0.5 (PaliGemma + Gemma expert).

Facts from lerobot 0.6.1 that these adapters rely on (no lerobot import here; everything is read off the
policy object):

* ``embed_prefix`` runs the vision tower once per camera on the whole batch (records come camera-major), then
  concatenates, per camera, ``[image start tokens] image tokens [image end token]`` (SmolVLA with
  ``add_image_special_tokens``: 2 before, 1 after; otherwise none), then the language tokens, then (SmolVLA
  only) one state token, then zero padding up to ``prefix_length``. A camera missing from the batch is an image
  of -1 everywhere whose tokens are padding-masked: its tokens are counted but not pooled.
* The prefix is prefilled once per action chunk by ``SmolVLMWithExpertModel.forward`` /
  ``PaliGemmaWithExpertModel.forward`` with ``inputs_embeds=[prefix, None]``; denoising steps call the same
  module with ``[None, suffix]`` and reuse the prefix's KV cache (exempt: ``is_decode``).
* SmolVLA runs the VLM's text layers in its own loop (``input_layernorm``, q/k/v, ``o_proj``, ``mlp`` called by
  hand, the layer input tensor doubling as the residual), so IVRA edits that tensor in place at
  ``layers[L].input_layernorm``; ``post_attn`` edits the ``o_proj`` output (the residual after attention is
  ``input + o_proj``); ``post`` is the input of layer L+1 (or of the final norm). pi0 / pi0.5 call the
  PaliGemma language model's decoder layers normally, so the default decoder-layer hooks apply.
"""

from __future__ import annotations

import torch

from ivra.adapters.base import Adapter, CapturePoint, EditPoint, ImageBlock, IVRAError, first_arg, register


def _blank_record(module, args, kwargs):
    """Which images of this vision call are lerobot's empty-camera padding (-1 everywhere)."""
    pixels = first_arg(args, kwargs, "pixel_values")
    return {"blank": pixels.flatten(1).eq(-1).all(1)}


class _LerobotAdapter(Adapter):
    #: attribute paths from any accepted root (policy, flow-matching model, *WithExpert model) to the core
    core_paths: tuple[str, ...] = ()
    special_before = special_after = 0
    state_tokens = 0

    def core(self, model):
        for path in self.core_paths:
            cur = model
            try:
                for part in filter(None, path.split(".")):
                    cur = getattr(cur, part)
            except AttributeError:
                continue
            return cur
        raise IVRAError(f"{type(model).__name__} has none of {list(self.core_paths)}")

    def pass_modules(self, model):
        return [self.core(model)]

    def is_decode(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        return embeds is not None and embeds[0] is None  # a denoising step: suffix only, prefix cache reused

    def locate_points(self, model):
        def lang(module, args, kwargs):
            ids = first_arg(args, kwargs, "input")
            return {"lang_len": ids.shape[1]} if ids is not None and ids.dim() == 2 else None

        return [CapturePoint(self.text_embedding(model), "pre", lang)]

    def capture_points(self, model, layer, feature):
        return [CapturePoint(self.vision_model(model), "pre", _blank_record)] + super().capture_points(
            model, layer, feature
        )

    def camera_keys(self, model, keys: torch.Tensor) -> torch.Tensor:
        """(B, n_patches, Dk) of one camera -> (B, n_tokens, Dk) in the language model's token order."""
        return keys

    def image_blocks(self, model, records):
        blocks, blank = (
            [],
            None,
        )  # (the mask marks image tokens only: special tokens are not visual positions)
        for record in records:
            if "blank" in record:
                blank = record["blank"]
                continue
            keys = self.camera_keys(model, record["keys"])
            for b in range(keys.shape[0]):
                pool = not (blank is not None and bool(blank[b]))
                blocks.append(ImageBlock(keys[b], sample=b, pool=pool))
        return blocks

    def special(self, model) -> tuple[int, int]:
        return self.special_before, self.special_after

    def visual_mask(self, model, located, records, hidden):
        cameras = [self.camera_keys(model, r["keys"]).shape[1] for r in records if "keys" in r]
        if not cameras:
            return None
        lang = [r["lang_len"] for r in located if "lang_len" in r]
        before, after = self.special(model)
        n_batch, seq = hidden.shape[:2]
        mask = torch.zeros(n_batch, seq, dtype=torch.bool, device=hidden.device)
        offset = 0
        for n in cameras:
            mask[:, offset + before : offset + before + n] = True
            offset += before + n + after
        if lang:
            used = offset + lang[-1] + self.state_tokens
            if used != seq and not (used < seq and self.padded_to(model) == seq):
                raise IVRAError(
                    f"IVRA could not act: the prefix has {seq} positions but {len(cameras)} camera(s) of "
                    f"{cameras} tokens (+{before}/{after} special tokens each), {lang[-1]} language and "
                    f"{self.state_tokens} state tokens make {used}: unknown prefix layout"
                )
        return mask

    def padded_to(self, model) -> int:
        return -1

    def check_position(self, model, layer, position):
        """The action expert reads only the prefix's KV cache: an edit after the last layer's attention can
        change nothing and is refused rather than run as a silent no-op."""
        if position != "pre" and layer == len(self.lm_layers(model)) - 1:
            raise IVRAError(
                f"position={position!r} at the last language-model layer ({layer}) has no effect on "
                f"{type(model).__name__}: its action expert reads only the prefix's keys and values, which that "
                "layer computes before its attention; use position='pre' or an earlier layer"
            )

    def edit_points(self, model, layer, position):
        self.check_position(model, layer, position)
        return super().edit_points(model, layer, position)


@register
class SmolVLAAdapter(_LerobotAdapter):
    """lerobot's SmolVLA. Default ``affinity_layer``: the last SigLIP layer (its output is what SmolVLA projects)."""

    name = "smolvla"
    model_classes = ("SmolVLAPolicy", "VLAFlowMatching", "SmolVLMWithExpertModel")
    core_paths = ("model.vlm_with_expert", "vlm_with_expert", "")
    state_tokens = 1

    def _vlm(self, model):
        return self.core(model).vlm.model

    def lm_layers(self, model):
        return self._vlm(model).text_model.layers

    def vision_layers(self, model):
        return self._vlm(model).vision_model.encoder.layers

    def vision_model(self, model):
        return self._vlm(model).vision_model

    def text_embedding(self, model):
        return self._vlm(model).text_model.get_input_embeddings()

    def _config(self, model):
        for path in ("config", "model.config"):
            cfg = model
            for part in path.split("."):
                cfg = getattr(cfg, part, None)
            if cfg is not None and hasattr(cfg, "add_image_special_tokens"):
                return cfg
        return None

    def special(self, model):
        cfg = self._config(model)
        if cfg is None:  # attached to the SmolVLMWithExpertModel: the flag lives on the flow-matching model
            raise IVRAError(
                "attach IVRA to the SmolVLAPolicy or its VLAFlowMatching model (policy.model): the prefix "
                "layout (image special tokens) is read from their config"
            )
        return (2, 1) if cfg.add_image_special_tokens else (0, 0)

    def padded_to(self, model):
        cfg = self._config(model)
        return cfg.prefix_length if cfg is not None else -1

    def default_affinity_layer(self, model):
        return len(self.vision_layers(model)) - 1

    def camera_keys(self, model, keys):
        """SmolVLM's connector pixel-shuffles s x s patches into one token: the same shuffle on the keys, then
        the mean of each token's s*s patch keys."""
        connector = self._vlm(model).connector
        scale = connector.scale_factor
        shuffled = connector.pixel_shuffle(keys.contiguous(), scale)
        return shuffled.reshape(*shuffled.shape[:2], scale * scale, keys.shape[-1]).mean(-2)

    def edit_points(self, model, layer, position):
        self.special(model)  # refuse a root whose prefix layout is unknown now, not at the first forward
        self.check_position(model, layer, position)
        layers = self.lm_layers(model)
        if position == "pre":
            return [EditPoint(layers[layer].input_layernorm, "pre_inplace")]
        if position == "post_attn":
            return [
                EditPoint(layers[layer].input_layernorm, "plan"),
                EditPoint(layers[layer].self_attn.o_proj, "attn_residual"),
            ]
        nxt = (
            layers[layer + 1].input_layernorm if layer + 1 < len(layers) else self._vlm(model).text_model.norm
        )
        return [EditPoint(nxt, "pre_inplace")]


@register
class PI0Adapter(_LerobotAdapter):
    """lerobot's pi0 and pi0.5. Default ``affinity_layer``: the last SigLIP layer (PaliGemma projects its
    post-layernormed output). One token per patch, no CLS; the language tokens follow the cameras."""

    name = "pi0"
    model_classes = ("PI0Policy", "PI0Pytorch", "PI05Policy", "PI05Pytorch", "PaliGemmaWithExpertModel")
    core_paths = ("model.paligemma_with_expert", "paligemma_with_expert", "")

    def _pg(self, model):
        return self.core(model).paligemma.model

    def lm_layers(self, model):
        return self._pg(model).language_model.layers

    def vision_layers(self, model):
        return self._pg(model).vision_tower.vision_model.encoder.layers

    def vision_model(self, model):
        return self._pg(model).vision_tower

    def text_embedding(self, model):
        return self._pg(model).language_model.get_input_embeddings()
