"""FLOWER on the LIBERO harness, following FLOWER's own LIBERO rollout (core environment, transformers 5).

What FLOWER's LIBERO rollout does, and this wrapper with it:

* two cameras, raw: the third-person ``agentview_image`` and the wrist ``robot0_eye_in_hand_image`` as LIBERO
  renders them (FLOWER trains on LIBERO's own upside-down frames). The harness hands upright images (rotated by
  180 degrees for OpenVLA-style policies), so they are rotated back here;
* each image resized to ``image_size`` (112 px, FLOWER's LIBERO setting; bilinear) and normalised with
  Florence-2's ImageNet mean/std; each camera is encoded separately (one DaViT pass per camera);
* an action chunk of ``chunk`` steps is sampled (flow matching, a few Euler steps from Gaussian noise) every
  ``multistep`` steps and executed one action per step; actions are clamped to [-1, 1] and sent as they are.

The noise is drawn from a generator seeded by ``reset(seed)``, so both arms of an A/B draw the same noise.
``model`` is required: ``model="tiny"`` builds :func:`ivra.rebuilt.flower.build_tiny` (RANDOM weights, a
byte-level tokenizer: it tests the pipeline, its success rates say nothing about FLOWER; ``random_weights`` then
says so, and the LIBERO run writes it into its output, manifest and report); a real FLOWER checkpoint is loaded
with FLOWER's own code (not installable here): pass the loaded ``FLOWERVLA`` object as ``model`` (inline
executor). Its LIBERO wait steps (5 zero actions) differ from the harness's
protocol (10), which the run manifest records as the harness's own setting.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ivra.policies.base import IVRASwitch

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FlowerPolicy(IVRASwitch):
    name = "flower"

    def __init__(
        self,
        model: Any = None,
        image_size: int = 112,
        chunk: int = 10,
        multistep: int = 10,
        authors_spans: bool = False,
        device: str = "cpu",
        model_seed: int = 0,
        ivra: dict | None = None,
    ):
        import torch

        from ivra.adapters.flower import FlowerAdapter

        if model is None:
            raise ValueError(
                "FlowerPolicy needs a model: model=tiny for the RANDOM-weight rebuild (tests the pipeline only), "
                "or a loaded FLOWERVLA object (FLOWER's own code, inline executor)"
            )
        #: why this policy runs random weights (None: the weights given)
        self.random_weights: str | None = None
        if isinstance(model, str):
            if model != "tiny":
                raise ValueError(
                    f"model={model!r}: FLOWER checkpoints load with FLOWER's own code; pass the loaded FLOWERVLA "
                    "object as model=..., or model='tiny' for the random-weight rebuild"
                )
            from ivra.rebuilt.flower import build_tiny

            model = build_tiny(seed=model_seed)
            model.chunk = chunk
            self.random_weights = (
                f"model=tiny: FLOWER's structure rebuilt with random weights (model_seed={model_seed}), "
                "not a trained checkpoint"
            )
        self.model = model.to(device).eval()
        self.device, self.image_size = device, int(image_size)
        self.chunk, self.multistep = int(chunk), int(multistep)
        if not 1 <= self.multistep <= self.chunk:
            raise ValueError(f"multistep must be in 1..chunk ({self.chunk}), got {multistep}")
        self.adapter = FlowerAdapter(authors_spans=authors_spans)
        self.generator = torch.Generator(device="cpu").manual_seed(0)
        self._queue: list[np.ndarray] = []
        self.ivra_target = self.model
        self.ivra_adapter = self.adapter
        self.set_ivra(ivra)

    def reset(self, seed: int | None = None) -> None:
        self.generator.manual_seed(0 if seed is None else int(seed))
        self._queue = []

    def pixels(self, image: np.ndarray):
        import torch
        from PIL import Image

        raw = np.ascontiguousarray(
            np.asarray(image, dtype=np.uint8)[::-1, ::-1]
        )  # back to LIBERO's own frame
        img = Image.fromarray(raw).convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def text_ids(self, instructions: list[str]):
        import torch

        vocab = self.model.vlm.config.text_config.vocab_size
        rows = [[3 + b % (vocab - 3) for b in s.lower().encode("utf-8")] or [3] for s in instructions]
        n = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), n, dtype=torch.long)
        mask = torch.zeros(len(rows), n, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        return ids, mask

    def act(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        import torch

        if len(observations) != 1:
            raise ValueError(
                f"FlowerPolicy runs one episode at a time (action chunks), got a batch of {len(observations)}"
            )
        if not self._queue:
            static = torch.stack([self.pixels(o["image"]) for o in observations]).to(self.device)
            gripper = torch.stack([self.pixels(o["wrist_image"]) for o in observations]).to(self.device)
            ids, mask = self.text_ids(instructions)
            noise = torch.randn(1, self.chunk, self.model.action_dim, generator=self.generator).to(
                self.device
            )
            with torch.inference_mode():
                chunk = self.model(static, gripper, ids.to(self.device), mask.to(self.device), noise)
            self._queue = list(chunk[0, : self.multistep].float().cpu().numpy().astype(np.float64))
        return self._queue.pop(0)[None]
