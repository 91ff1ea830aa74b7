"""OpenVLA on the LIBERO harness, following OpenVLA's own LIBERO evaluation protocol (``openvla`` environment).

Per step, for each observation (OpenVLA predicts one sample at a time):

1. the third-person image, upright: LIBERO renders upside down and the harness already rotates it by 180 degrees
   (OpenVLA's flip; :func:`ivra.eval.libero.job.policy_observation`), so it is not flipped again here;
2. JPEG encode/decode round trip (quality 95, as the RLDS training images were stored) and resize to 224x224
   (Lanczos with antialiasing);
3. centre crop of 0.9 of the area (side ``sqrt(0.9)``) resized back to 224x224 (bilinear): OpenVLA's
   ``center_crop=True``, used for checkpoints fine-tuned with random-crop augmentation (all LIBERO ones);
4. the processor: DINOv2 (ImageNet mean/std) and SigLIP (0.5/0.5) normalisation stacked into 6 channels; prompt
   ``"In: What action should the robot take to {instruction.lower()}?\\nOut:"``;
5. ``predict_action(unnorm_key=...)``: 7 greedy action tokens, token -> one of 255 bin centres of 256 uniform bins
   on [-1, 1], q01/q99 un-normalisation of the dimensions the norm-stats mask selects (not the gripper);
6. gripper: [0, 1] -> [-1, +1] and binarised (sign), then inverted (OpenVLA: 1 = open; LIBERO: -1 = open).

The JPEG and resize steps use Pillow where OpenVLA's script uses TensorFlow's ops: pixel values can differ by
a few levels (say so when comparing with published numbers).

``model`` is required: ``model="tiny"`` builds the rebuilt RANDOM-weight model of :mod:`ivra.rebuilt.openvla` (a
byte-level tokenizer, identity norm stats q01=-1, q99=1) to exercise the whole path (``random_weights`` then says
so, and the LIBERO run writes it into its output, manifest and report); any other value is a checkpoint directory
or hub id loaded with OpenVLA's own remote code (``trust_remote_code=True``, transformers 4.40.1, timm 0.9.x).
``tower`` picks the affinity tower (:mod:`ivra.adapters.openvla`).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from ivra.policies.base import IVRASwitch

DINO_MEAN, DINO_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
SIZE = 224
CROP_AREA = 0.9
JPEG_QUALITY = 95


def jpeg_resize(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """JPEG round trip then Lanczos resize to ``size`` x ``size`` (uint8 HxWx3)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB").save(
        buf, "JPEG", quality=JPEG_QUALITY
    )
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(img.resize((size, size), Image.LANCZOS, reducing_gap=None))


def center_crop(image: np.ndarray, area: float = CROP_AREA, size: int = SIZE) -> np.ndarray:
    """The central crop holding ``area`` of the image, resized back to ``size`` (bilinear)."""
    from PIL import Image

    h, w = image.shape[:2]
    side = math.sqrt(area)
    ch, cw = int(round(h * side)), int(round(w * side))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = Image.fromarray(image[top : top + ch, left : left + cw])
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def gripper_to_libero(action: np.ndarray) -> np.ndarray:
    """OpenVLA's gripper (1 = open, 0 = close) -> LIBERO's (-1 = open, +1 = close): 2x - 1, sign, invert."""
    out = np.array(action, dtype=np.float64)
    g = 2.0 * out[..., -1] - 1.0
    out[..., -1] = -np.sign(g)
    return out


class ByteTokenizer:
    """The tiny model's tokenizer: BOS = 1, byte b -> b + 3."""

    def __call__(self, text: str) -> list[int]:
        return [1] + [b + 3 for b in text.encode("utf-8")]


class OpenVLAPolicy(IVRASwitch):
    name = "openvla"

    def __init__(
        self,
        model: str | None = None,
        unnorm_key: str = "libero_spatial",
        center_crop: bool = True,
        tower: str = "dinov2",
        device: str = "cpu",
        dtype: str = "float32",
        model_seed: int = 0,
        ivra: dict | None = None,
    ):
        import torch

        from ivra.adapters.openvla import OpenVLAAdapter

        self.device, self.unnorm_key, self.crop = device, unnorm_key, bool(center_crop)
        self.adapter = OpenVLAAdapter(tower=tower)
        torch_dtype = getattr(torch, dtype)
        if model is None:
            raise ValueError(
                f"{type(self).__name__} needs a model: model=CHECKPOINT_DIR (an OpenVLA checkpoint folder or hub "
                "id), or model=tiny for RANDOM weights (tests the pipeline only)"
            )
        #: why this policy runs random weights (None: a checkpoint was loaded)
        self.random_weights: str | None = None
        if model == "tiny":
            self.random_weights = (
                f"model=tiny: {type(self).__name__}'s structure rebuilt with random weights "
                f"(model_seed={model_seed}), not a trained checkpoint"
            )
            stats = {
                unnorm_key: {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}}
            }
            self.model = self._build_tiny(model_seed, stats, torch_dtype).to(device)
            self.tokenizer = ByteTokenizer()
            self.processor = None
        else:
            from transformers import AutoModelForVision2Seq, AutoProcessor

            self.processor = AutoProcessor.from_pretrained(model, trust_remote_code=True)
            self.model = AutoModelForVision2Seq.from_pretrained(
                model, torch_dtype=torch_dtype, trust_remote_code=True, low_cpu_mem_usage=True
            ).to(device)
            self.tokenizer = None
        self.model.eval()
        self.dtype = torch_dtype
        self.ivra_target = self.model
        self.ivra_adapter = self.adapter
        self.set_ivra(ivra)

    def _build_tiny(self, seed, stats, torch_dtype):
        from ivra.rebuilt.openvla import build_tiny

        return build_tiny(seed=seed, norm_stats=stats, dtype=torch_dtype)

    # -- protocol ----------------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        return None  # greedy decoding: nothing random

    def prompt(self, instruction: str) -> str:
        return f"In: What action should the robot take to {instruction.lower()}?\nOut:"

    def image(self, observation: dict[str, Any]) -> np.ndarray:
        img = jpeg_resize(observation["image"])
        return center_crop(img) if self.crop else img

    def _inputs(self, image: np.ndarray, instruction: str) -> dict:
        import torch

        if self.processor is not None:
            from PIL import Image

            inputs = self.processor(self.prompt(instruction), Image.fromarray(image).convert("RGB"))
            return {
                k: v.to(self.device, dtype=self.dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in inputs.items()
            }
        x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)
        dino = (x - torch.tensor(DINO_MEAN).view(3, 1, 1)) / torch.tensor(DINO_STD).view(3, 1, 1)
        sig = (x - torch.tensor(SIGLIP_MEAN).view(3, 1, 1)) / torch.tensor(SIGLIP_STD).view(3, 1, 1)
        pixels = torch.cat([dino, sig])[None].to(self.device, self.dtype)
        ids = torch.tensor([self.tokenizer(self.prompt(instruction))], device=self.device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}

    def act(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for obs, text in zip(observations, instructions):
                inputs = self._inputs(self.image(obs), text)
                action = self.model.predict_action(**inputs, unnorm_key=self.unnorm_key, do_sample=False)
                out.append(gripper_to_libero(np.asarray(action, dtype=np.float64)))
        return np.stack(out)


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """robosuite's (x, y, z, w) quaternion -> axis-angle (3,), as OpenVLA-OFT's LIBERO proprio uses."""
    q = np.asarray(quat, dtype=np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return q[:3] * 2.0 * math.acos(w) / den


class OpenVLAOFTPolicy(OpenVLAPolicy):
    """OpenVLA-OFT on LIBERO: OpenVLA's image protocol for both cameras (third-person, then wrist), an 8-D proprio
    token (end-effector position, axis-angle orientation, the two gripper joints) normalised to [-1, 1] with its
    q01/q99, one forward per chunk of 8 actions executed open loop, q01/q99 un-normalisation and OpenVLA's gripper
    convention. Only ``model="tiny"`` (the rebuilt OFT structure with RANDOM weights, identity norm stats), and it
    must be given: OFT checkpoints need OFT's own code for their action head and proprio projector."""

    name = "openvla-oft"

    def __init__(self, model: str | None = None, open_loop_steps: int = 8, use_film: bool = False, **kwargs):
        if model is None:
            raise ValueError(
                "OpenVLAOFTPolicy needs a model: model=tiny for RANDOM weights (the rebuilt OFT structure, tests "
                "the pipeline only); OFT checkpoints load with OFT's own code"
            )
        if model != "tiny":
            raise ValueError(
                f"model={model!r}: OpenVLA-OFT checkpoints load with OFT's own code (action head, proprio "
                "projector); only model='tiny' (the rebuilt structure) is built here"
            )
        self.open_loop_steps, self.use_film = int(open_loop_steps), bool(use_film)
        self._queue: list[np.ndarray] = []
        super().__init__(model="tiny", **kwargs)

    def _build_tiny(self, seed, stats, torch_dtype):
        from ivra.rebuilt.openvla import build_tiny

        stats = {k: {**v, "proprio": {"q01": [-1.0] * 8, "q99": [1.0] * 8}} for k, v in stats.items()}
        return build_tiny(
            seed=seed, norm_stats=stats, dtype=torch_dtype, num_images_in_input=2, use_proprio=True,
            use_film=self.use_film,
        )  # fmt: skip

    def reset(self, seed: int | None = None) -> None:
        self._queue = []

    def proprio(self, state: np.ndarray) -> np.ndarray:
        s = np.asarray(state, dtype=np.float64)
        raw = np.concatenate([s[:3], quat_to_axis_angle(s[3:7]), s[7:9]])
        p = self.model.config.norm_stats[self.unnorm_key]["proprio"]
        low, high = np.asarray(p["q01"]), np.asarray(p["q99"])
        return np.clip(2.0 * (raw - low) / np.maximum(high - low, 1e-8) - 1.0, -1.0, 1.0)

    def act(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        import torch

        if len(observations) != 1:
            raise ValueError(
                f"OpenVLAOFTPolicy runs one episode at a time (action chunks), got {len(observations)}"
            )
        if not self._queue:
            obs, text = observations[0], instructions[0]
            views = [self._inputs(self.image({"image": obs[k]}), text) for k in ("image", "wrist_image")]
            inputs = views[0]
            inputs["pixel_values"] = torch.cat([v["pixel_values"] for v in views], dim=1)
            proprio = torch.tensor(self.proprio(obs["state"]), dtype=self.dtype, device=self.device)[None]
            with torch.inference_mode():
                chunk = self.model.predict_action_chunk(**inputs, proprio=proprio)
            normalized = chunk[0].float().cpu().numpy().astype(np.float64)
            actions = self.model.unnormalize(normalized, self.unnorm_key)
            self._queue = [gripper_to_libero(a) for a in actions[: self.open_loop_steps]]
        return self._queue.pop(0)[None]
