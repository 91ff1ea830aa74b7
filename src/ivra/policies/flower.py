"""FLOWER on the LIBERO harness, driven through FLOWERVLA's own inference API as FLOWER's LIBERO rollout drives it.

What FLOWER's rollout does (``flower/rollout/libero_rollout.py``, ``flower/evaluation/flower_eval_libero.py`` and
``conf/datamodule/transforms/libero_transforms.yaml`` of intuitive-robots/flower_vla_calvin; recorded in
``tests/fixtures/real/flower.json``), and this wrapper with it:

* the observation dict: ``{"rgb_obs": {"rgb_static": agentview_image, "rgb_gripper": robot0_eye_in_hand_image}}``,
  each camera a (1, 1, 3, 112, 112) float tensor (batch, time, channels, ...); FLOWER's rollout feeds LIBERO's own
  upside-down frames, and the harness hands them upright (rotated by 180 degrees for OpenVLA-style policies), so
  they are rotated back here;
* FLOWER's validation transforms: ``Resize(112, antialias=True)`` on the uint8 tensor (bilinear, rounded back to
  uint8), ``/ 255``, ``Normalize`` with CLIP's mean/std;
* the goal ``{"lang_text": instruction}``: the model builds its own prompt and tokenises it with its own tokenizer;
* FLOWER's rollout calls ``model.step(obs, goal)`` once per environment step; ``step`` calls FLOWER's chunk API,
  ``model(obs, goal)`` (``FLOWERVLA.forward``: a chunk of ``act_window_size`` actions by flow matching from Gaussian
  noise, clamped to [-1, 1]), every ``multistep`` steps and returns the chunk's actions one by one. Under the chunk
  contract (:mod:`ivra.policies.base`) this wrapper calls ``model(obs, goal)`` itself: ``predict`` returns the
  whole chunk, (B, act_window_size, 7); ``chunk_length`` is ``act_window_size`` and ``execute_steps``
  ``multistep``, so an :class:`ivra.episodes.EpisodeRunner` with those steps executes exactly what ``step`` would
  (tested against FLOWERVLA.step's own loop). No episode state: no ``reset``, no queue, no random stream kept.

Rows run one at a time (FLOWER's forward takes one goal text, ``[goal["lang_text"]]``). Paired noise: FLOWER draws
its noise with ``torch.randn`` on the global generator inside ``forward``, so each row's forward runs under
``torch.random.fork_rng`` with the generator seeded by the row's seed (the process's own random state is restored
afterwards): a row's chunk depends on its seed only, and both arms of an A/B pair draw the same noise.

``model`` is required: ``model="tiny"`` builds :func:`ivra.rebuilt.flower.build_tiny` (our rebuild of FLOWERVLA's
structure, held to the fixture, with RANDOM weights and a tiny local tokenizer: it tests the pipeline, its success
rates say nothing about FLOWER; ``random_weights`` then says so, and the LIBERO run writes it into its output,
manifest and report); ``model=RUN_DIR`` loads a FLOWER training run (its ``.hydra/config.yaml`` and a ``*.ckpt``)
with FLOWER's own class (``flower.models.flower.FLOWERVLA.load_from_checkpoint``; FLOWER's code must be importable,
e.g. ``pip install -e`` of its checkout); a loaded ``FLOWERVLA`` object may also be passed (inline executor).
FLOWER's rollout runs 5 zero actions after reset; the harness's wait steps are its own setting (the run manifest
records it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ivra.policies.base import IVRASwitch, predict_with_arms, row_seeds

#: FLOWER's LIBERO validation transforms (conf/datamodule/transforms/libero_transforms.yaml): CLIP's mean/std
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 112
#: LIBERO observation key -> FLOWER's observation dict path (flower/rollout/libero_rollout.py, translate_obs_space)
CAMERAS = {"agentview_image": "rgb_static", "robot0_eye_in_hand_image": "rgb_gripper"}


def load_checkpoint(path: str):
    """A FLOWER training run folder (``.hydra/config.yaml`` + ``*.ckpt``, ``last.ckpt`` preferred) or a ``.ckpt`` file,
    loaded with FLOWER's own Lightning class and the run's model config."""
    run = Path(path)
    ckpt = run if run.is_file() else None
    if ckpt is None:
        found = sorted(run.rglob("*.ckpt"))
        if not found:
            raise ValueError(
                f"model={path!r}: no *.ckpt under that folder (a FLOWER training run is expected)"
            )
        ckpt = next((c for c in found if c.stem == "last"), found[-1])
    configs = sorted((ckpt.parent if run.is_file() else run).rglob("*hydra/config.yaml"))
    if not configs:
        raise ValueError(f"model={path!r}: no .hydra/config.yaml beside the checkpoint (FLOWER's run config)")
    try:
        from flower.models.flower import FLOWERVLA
        from omegaconf import OmegaConf
    except ImportError as exc:
        raise ValueError(
            f"model={path!r}: loading a FLOWER checkpoint needs FLOWER's own code (pip install -e a checkout of "
            f"intuitive-robots/flower_vla_calvin): {exc}"
        ) from None
    cfg = OmegaConf.to_container(OmegaConf.load(configs[0]).model, resolve=True)
    cfg = {k: v for k, v in cfg.items() if k not in ("_target_", "_recursive_")}
    return FLOWERVLA.load_from_checkpoint(str(ckpt), **cfg)


class FlowerPolicy(IVRASwitch):
    name = "flower"

    def __init__(
        self,
        model: Any = None,
        authors_spans: bool = False,
        device: str = "cpu",
        model_seed: int = 0,
        multistep: int | None = None,
        ivra: dict | None = None,
    ):
        import torch

        from ivra.adapters.flower import FlowerAdapter

        if model is None:
            raise ValueError(
                "FlowerPolicy needs a model: model=tiny for the RANDOM-weight rebuild (tests the pipeline only), "
                "model=RUN_DIR (a FLOWER training run, loaded with FLOWER's own code) or a loaded FLOWERVLA object"
            )
        #: why this policy runs random weights (None: the weights given)
        self.random_weights: str | None = None
        if isinstance(model, (str, Path)):
            if str(model) == "tiny":
                from ivra.rebuilt.flower import build_tiny

                extra = {} if multistep is None else {"multistep": int(multistep)}
                model = build_tiny(seed=model_seed, **extra)
                self.random_weights = (
                    f"model=tiny: FLOWER's structure rebuilt with random weights (model_seed={model_seed}), "
                    "not a trained checkpoint"
                )
            else:
                model = load_checkpoint(str(model))
        if multistep is not None:
            if not 1 <= int(multistep) <= model.act_window_size:
                raise ValueError(f"multistep must be in 1..{model.act_window_size}, got {multistep}")
            model.multistep = int(multistep)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.adapter = FlowerAdapter(authors_spans=authors_spans)
        self.ivra_target = self.model
        self.ivra_adapter = self.adapter
        self.set_ivra(ivra)

    @property
    def chunk_length(self) -> int:
        """Actions per chunk: the model's ``act_window_size``."""
        return int(self.model.act_window_size)

    @property
    def execute_steps(self) -> int:
        """Actions executed per chunk by default: the model's ``multistep`` (what FLOWERVLA.step executes)."""
        return int(self.model.multistep)

    def _cuda(self) -> list[int]:
        import torch

        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

    # -- FLOWER's observation ------------------------------------------------------------------------------------------
    def pixels(self, image: np.ndarray):
        """One harness frame (H, W, 3) uint8, upright -> (1, 1, 3, 112, 112) as FLOWER's transforms make it."""
        import torch
        import torch.nn.functional as F

        # back to LIBERO's own frame, (1, 3, H, W) uint8 as the rollout's from_numpy().byte()
        raw = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[::-1, ::-1])
        x = torch.from_numpy(raw).permute(2, 0, 1)[None]
        h, w = x.shape[-2:]
        size = (IMAGE_SIZE, round(IMAGE_SIZE * w / h)) if h <= w else (round(IMAGE_SIZE * h / w), IMAGE_SIZE)
        x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp(0, 255) / 255.0  # Resize on uint8 returns uint8; then ScaleImageTensor
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return ((x - mean) / std)[None].to(self.device)  # (B=1, T=1, 3, H, W)

    def observation(self, obs: dict[str, Any]) -> dict:
        return {
            "rgb_obs": {
                "rgb_static": self.pixels(obs["image"]),
                "rgb_gripper": self.pixels(obs["wrist_image"]),
            }
        }

    def predict(self, observations, instructions, seeds=None, ivra=None) -> np.ndarray:
        """(B, act_window_size, action_dim): FLOWER's ``model(obs, goal)`` once per row, its noise seeded by the
        row's seed. ``ivra``: one setting per row, run as one sub-batch per setting through ``set_ivra``."""
        if ivra is not None:  # one sub-batch per setting; predict_with_arms restores the policy's own setting
            return predict_with_arms(self, observations, instructions, seeds, ivra)
        n = len(observations)
        if len(instructions) != n:
            raise ValueError(f"{len(instructions)} instructions for a batch of {n} observations")
        seeds = row_seeds(seeds, n)
        return np.stack([self.chunk(o, t, s) for o, t, s in zip(observations, instructions, seeds)])

    def chunk(self, observation: dict[str, Any], instruction: str, seed: int) -> np.ndarray:
        """One row: ``model(obs, goal)`` with the global generator (CPU, and the model's GPU) seeded by ``seed``
        -> (act_window_size, action_dim)."""
        import torch

        obs = self.observation(observation)
        goal = {"lang_text": instruction, "lang": None}
        devices = self._cuda()
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.default_generator.manual_seed(int(seed))
            for d in devices:
                with torch.cuda.device(d):
                    torch.cuda.manual_seed(int(seed))
            actions = self.model(obs, goal)
        return actions[0].float().cpu().numpy().astype(np.float64)
