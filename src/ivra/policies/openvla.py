"""OpenVLA and OpenVLA-OFT on the LIBERO harness, following their own LIBERO evaluation protocols (``openvla``
environment), under the chunk contract (:mod:`ivra.policies.base`; no episode state, no ``reset``).

:class:`OpenVLAPolicy` is single-step (chunk length 1, every action executed, :class:`~ivra.policies.base.SingleStep`)
and deterministic (greedy decoding: the seeds are not used). OpenVLA predicts one sample at a time, so a batch is a
loop over its rows, one ``predict_action`` each. Per row:

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

from ivra.policies.base import IVRASwitch, SingleStep, predict_with_arms, row_seeds

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


class _Prismatic(IVRASwitch):
    """What OpenVLA and OpenVLA-OFT share: loading, the image protocol, the prompt, the processor's inputs."""

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


class OpenVLAPolicy(SingleStep, _Prismatic):
    """OpenVLA: one action per row and call, (B, 1, 7); see the module docstring."""

    name = "openvla"

    def predict(self, observations, instructions, seeds=None, ivra=None) -> np.ndarray:
        if ivra is not None:
            return predict_with_arms(self, observations, instructions, seeds, ivra)
        return SingleStep.predict(self, observations, instructions, seeds)

    def act(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        """(B, 7): one ``predict_action`` per row (OpenVLA's LIBERO evaluation runs a batch of one)."""
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


class OpenVLAOFTPolicy(_Prismatic):
    """OpenVLA-OFT on LIBERO: OpenVLA's image protocol for both cameras (third-person, then wrist), an 8-D proprio
    token (end-effector position, axis-angle orientation, the two gripper joints) normalised to [-1, 1] with its
    q01/q99, one forward per chunk of ``chunk_length`` actions (the model's ``action_chunk``: 8 for LIBERO), q01/q99
    un-normalisation and OpenVLA's gripper convention on every action of the chunk: ``predict`` -> (B, 8, 7).
    ``execute_steps`` = ``open_loop_steps`` (OFT's LIBERO default: the whole chunk). Deterministic (OFT's L1
    regression head: the seeds are not used); the rows of a batch run one at a time (one forward each). Only
    ``model="tiny"`` (the rebuilt OFT structure with RANDOM weights, identity norm stats), and it must be given: OFT
    checkpoints need OFT's own code for their action head and proprio projector."""

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
        self.use_film = bool(use_film)
        super().__init__(model="tiny", **kwargs)
        #: actions per forward (the model's chunk) and executed open loop per chunk by default
        self.chunk_length = int(self.model.config.action_chunk)
        if not 1 <= int(open_loop_steps) <= self.chunk_length:
            raise ValueError(
                f"open_loop_steps must be in 1..{self.chunk_length} (the chunk), got {open_loop_steps}"
            )
        self.execute_steps = self.open_loop_steps = int(open_loop_steps)

    def _build_tiny(self, seed, stats, torch_dtype):
        from ivra.rebuilt.openvla import build_tiny

        stats = {k: {**v, "proprio": {"q01": [-1.0] * 8, "q99": [1.0] * 8}} for k, v in stats.items()}
        return build_tiny(
            seed=seed, norm_stats=stats, dtype=torch_dtype, num_images_in_input=2, use_proprio=True,
            use_film=self.use_film,
        )  # fmt: skip

    def proprio(self, state: np.ndarray) -> np.ndarray:
        s = np.asarray(state, dtype=np.float64)
        raw = np.concatenate([s[:3], quat_to_axis_angle(s[3:7]), s[7:9]])
        p = self.model.config.norm_stats[self.unnorm_key]["proprio"]
        low, high = np.asarray(p["q01"]), np.asarray(p["q99"])
        return np.clip(2.0 * (raw - low) / np.maximum(high - low, 1e-8) - 1.0, -1.0, 1.0)

    def predict(self, observations, instructions, seeds=None, ivra=None) -> np.ndarray:
        """(B, chunk_length, 7): the whole chunk of every row, un-normalised, LIBERO's gripper convention."""
        if ivra is not None:
            return predict_with_arms(self, observations, instructions, seeds, ivra)
        if len(instructions) != len(observations):
            raise ValueError(
                f"{len(instructions)} instructions for a batch of {len(observations)} observations"
            )
        row_seeds(seeds, len(observations))
        return np.stack([self.chunk(o, t) for o, t in zip(observations, instructions)])

    def chunk(self, obs: dict[str, Any], text: str) -> np.ndarray:
        """One row's chunk (chunk_length, 7): one forward over both cameras and the proprio token."""
        import torch

        views = [self._inputs(self.image({"image": obs[k]}), text) for k in ("image", "wrist_image")]
        inputs = views[0]
        inputs["pixel_values"] = torch.cat([v["pixel_values"] for v in views], dim=1)
        proprio = torch.tensor(self.proprio(obs["state"]), dtype=self.dtype, device=self.device)[None]
        with torch.inference_mode():
            chunk = self.model.predict_action_chunk(**inputs, proprio=proprio)
        normalized = chunk[0].float().cpu().numpy().astype(np.float64)
        return gripper_to_libero(self.model.unnormalize(normalized, self.unnorm_key))
