"""A random-weight VLA built on a real transformers VLM class, decoding OpenVLA-style action tokens.

It exercises the exact code path of a real VLA on any benchmark -- image preprocessing, a LLaVA forward with
visual tokens inside the language model, ``generate`` -- and IVRA attached to it, without downloading anything:

* model: ``LlavaForConditionalGeneration`` from a tiny ``CLIPVisionConfig`` + ``LlamaConfig``, weights drawn
  with ``torch.manual_seed(model_seed)`` (both arms of an A/B, and every worker process, get identical weights);
* tokens: a byte-level "tokenizer" (ids 3..258 = UTF-8 bytes, 0 pad, 1 BOS, 259 the image placeholder), then
  256 action tokens, which are the *last* 256 ids of the vocabulary (as in OpenVLA);
* prompt (OpenVLA's): ``BOS <image>*N "In: What action should the robot take to {instruction}?\\nOut:"``;
* actions: ``generate(max_new_tokens=7)`` greedy (or sampled with ``temperature > 0``, each row
  seeded by its ``seeds`` entry of ``predict``, one row at a time), constrained to the action ids; token ``V-256+i`` -> bin ``i`` of 256 uniform bins over
  [-1, 1] -> the bin centre ``-1 + (i + 0.5) * 2/256``; the gripper dimension is binarised to -1 (open) /
  +1 (close), LIBERO's convention;
* image: the third-person ``observation["image"]`` (HxWx3 uint8, already upright), resized bilinearly to
  the vision tower's ``image_size`` and normalised with CLIP's mean/std; deterministic.

``set_ivra(cfg)`` attaches IVRA (``ivra.attach(model, ivra.IVRAConfig(**cfg))``) or detaches it
(``None``), so one loaded model can serve both arms.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ivra.policies.base import IVRASwitch, SingleStep, row_seeds

N_BINS = 256
ACTION_DIM = 7
PAD, BOS, IMAGE = 0, 1, 259
TEXT_OFFSET = 3  # byte b -> id b + 3
BASE_VOCAB = 260
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# IVRA defaults for this 4-layer language model: a middle layer, the paper's lambda
DEFAULT_IVRA = {"layer": 2, "lam": 0.3}


def bin_centres(n_bins: int = N_BINS) -> np.ndarray:
    edges = np.linspace(-1.0, 1.0, n_bins + 1)
    return (edges[:-1] + edges[1:]) / 2.0


def build_tiny_llava(
    model_seed: int = 0,
    image_size: int = 64,
    patch_size: int = 8,
    hidden: int = 64,
    text_layers: int = 4,
    vision_layers: int = 3,
):
    """The tiny LLaVA with fixed random weights; vocabulary = 260 text/special ids + 256 action ids."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vc = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )
    tc = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=BASE_VOCAB + N_BINS,
        max_position_embeddings=1024,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=None,
    )
    cfg = LlavaConfig(
        vision_config=vc,
        text_config=tc,
        image_token_id=IMAGE,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    cfg._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed)
        model = LlavaForConditionalGeneration(cfg)
    model.eval()
    gc = model.generation_config
    gc.pad_token_id, gc.bos_token_id, gc.eos_token_id = PAD, BOS, None
    return model


class TinyVLAPolicy(SingleStep, IVRASwitch):
    """Random-weight LLaVA VLA emitting OpenVLA-style action tokens; see the module docstring."""

    name = "tiny-vla"

    def __init__(
        self,
        ivra: dict | None = None,
        model_seed: int = 0,
        temperature: float = 0.0,
        image_size: int = 64,
        patch_size: int = 8,
        device: str = "cpu",
    ):
        import torch

        self.model = build_tiny_llava(model_seed, image_size=image_size, patch_size=patch_size).to(device)
        #: why this policy runs random weights (:func:`ivra.policies.base.policy_notes`)
        self.random_weights = "tiny-vla: a random-weight test model (a tiny LLaVA with OpenVLA-style action tokens), not trained"
        self.device = device
        self.image_size = image_size
        self.n_image_tokens = (image_size // patch_size) ** 2
        self.vocab = self.model.config.text_config.vocab_size
        self.action_ids = torch.arange(self.vocab - N_BINS, self.vocab, device=device)
        self.centres = bin_centres()
        self.temperature = float(temperature)
        self.ivra_target = self.model
        self.set_ivra(ivra)

    # -- IVRA ------------------------------------------------------------------------------------
    def overlay(self) -> np.ndarray | None:
        """IVRA's last affinity as a patch-grid map (mean affinity each patch receives), for video overlays."""
        aff = getattr(self.ivra_handle, "last_affinity", None) if self.ivra_handle is not None else None
        if not aff:
            return None
        a = aff[0].detach().float().cpu().numpy()
        g = int(round(a.shape[0] ** 0.5))
        if g * g != a.shape[0]:
            return None
        return a.mean(axis=0).reshape(g, g)

    # -- Policy protocol ---------------------------------------------------------------------------
    def predict(self, observations, instructions, seeds=None, ivra=None) -> np.ndarray:
        """(B, 1, 7). Greedy: one batch, seeds unused. Sampling (``temperature > 0``): row i is sampled on a
        generator seeded with ``seeds[i]``, one row at a time (generate's sampler draws from one global stream, so
        a batch would give a row different noise than it gets alone)."""
        if self.temperature <= 0:
            return SingleStep.predict(self, observations, instructions, seeds, ivra)
        import torch

        seeds = row_seeds(seeds, len(observations))
        devices = [torch.device(self.device).index or 0] if torch.device(self.device).type == "cuda" else []
        out = []
        for i, seed in enumerate(seeds):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                one = ([observations[i]], [instructions[i]])
                out.append(self.act(*one) if ivra is None else self.act(*one, ivra=[ivra[i]]))
        return np.concatenate(out)[:, None, :]

    def preprocess(self, image: np.ndarray):
        import torch
        from PIL import Image

        img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")
        img = img.resize((self.image_size, self.image_size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
        std = torch.tensor(CLIP_STD).view(3, 1, 1)
        return (x - mean) / std

    def prompt_ids(self, instruction: str) -> list[int]:
        text = f"In: What action should the robot take to {instruction.strip().lower()}?\nOut:"
        return [BOS] + [IMAGE] * self.n_image_tokens + [b + TEXT_OFFSET for b in text.encode("utf-8")]

    def _inputs(self, observations: list[dict[str, Any]], instructions: list[str]):
        import torch

        rows = [self.prompt_ids(s) for s in instructions]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), PAD, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding, as for generation
            ids[i, length - len(r) :] = torch.tensor(r)
            mask[i, length - len(r) :] = 1
        pixels = torch.stack([self.preprocess(o["image"]) for o in observations])
        return {
            "input_ids": ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "pixel_values": pixels.to(self.device),
        }

    def action_logits(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        """Logits of the first action token over the 256 action bins, shape (batch, 256)."""
        import torch

        with torch.inference_mode():
            out = self.model(**self._inputs(observations, instructions))
        return out.logits[:, -1, self.vocab - N_BINS :].float().cpu().numpy()

    per_sample_ivra = True  # act(..., ivra=[cfg or None per row]) runs both arms in one batch

    def act(
        self,
        observations: list[dict[str, Any]],
        instructions: list[str],
        ivra: list[dict | None] | None = None,
    ) -> np.ndarray:
        """Actions (B, 7); ``ivra``: one IVRA setting (or None) per row, all in one batch, instead of the
        setting of :meth:`set_ivra`."""
        if ivra is None:
            return self._generate(observations, instructions)
        return self.act_per_sample(observations, instructions, ivra, self._generate)

    def _generate(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList

        action_ids = self.action_ids

        class OnlyActionTokens(LogitsProcessor):
            def __call__(self, input_ids, scores):
                mask = torch.full_like(scores, float("-inf"))
                mask[:, action_ids] = 0.0
                return scores + mask

        gen_kwargs: dict[str, Any] = {"max_new_tokens": ACTION_DIM, "min_new_tokens": ACTION_DIM}
        if self.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0)
        else:
            gen_kwargs.update(do_sample=False)
        with torch.inference_mode():
            out = self.model.generate(
                **self._inputs(observations, instructions),
                logits_processor=LogitsProcessorList([OnlyActionTokens()]),
                pad_token_id=PAD,
                **gen_kwargs,
            )
        tokens = out[:, -ACTION_DIM:].cpu().numpy()
        bins = np.clip(tokens - (self.vocab - N_BINS), 0, N_BINS - 1)
        actions = self.centres[bins].astype(np.float64)
        actions[:, -1] = np.where(actions[:, -1] > 0, 1.0, -1.0)
        return actions
