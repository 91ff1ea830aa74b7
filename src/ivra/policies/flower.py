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
* ``model.step(obs, goal)`` once per environment step: the model samples a chunk of ``act_window_size`` actions
  every ``multistep`` steps (flow matching from Gaussian noise) and returns one action per step; ``model.reset()``
  at each episode start. Actions are used as the model returns them (clamped to [-1, 1] by the model).

Paired noise: FLOWER draws its noise with ``torch.randn`` on the global generator inside ``forward``. This wrapper
keeps a generator state per episode, seeded by ``reset(seed)``, and runs each ``step`` on it (the process's own
random state is restored afterwards), so both arms of an A/B pair draw the same noise.

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

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from ivra.policies.base import IVRASwitch

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
        self._rng: dict[str, Any] = {}
        self.reset(0)
        self.ivra_target = self.model
        self.ivra_adapter = self.adapter
        self.set_ivra(ivra)

    # -- the episode's random stream (FLOWER's noise comes from the global generator) ---------------------------------
    def _cuda(self) -> list[int]:
        import torch

        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

    def reset(self, seed: int | None = None) -> None:
        import torch

        devices = self._cuda()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0 if seed is None else int(seed))
            self._rng = {"cpu": torch.get_rng_state()}
            for d in devices:
                self._rng[d] = torch.cuda.get_rng_state(d)
        self.model.reset()

    @contextlib.contextmanager
    def _episode_rng(self):
        import torch

        devices = self._cuda()
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self._rng["cpu"])
            for d in devices:
                torch.cuda.set_rng_state(self._rng[d], d)
            yield
            self._rng = {"cpu": torch.get_rng_state(), **{d: torch.cuda.get_rng_state(d) for d in devices}}

    # -- FLOWER's observation ------------------------------------------------------------------------------------------
    def pixels(self, image: np.ndarray):
        """One harness frame (H, W, 3) uint8, upright -> (1, 1, 3, 112, 112) as FLOWER's transforms make it."""
        import torch
        import torch.nn.functional as F

        raw = np.ascontiguousarray(
            np.asarray(image, dtype=np.uint8)[::-1, ::-1]
        )  # back to LIBERO's own frame
        x = torch.from_numpy(raw).permute(2, 0, 1)[
            None
        ]  # (1, 3, H, W) uint8, as the rollout's from_numpy().byte()
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

    def act(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        import torch

        if len(observations) != 1:
            raise ValueError(
                f"FlowerPolicy runs one episode at a time (action chunks), got a batch of {len(observations)}"
            )
        obs = self.observation(observations[0])
        goal = {"lang_text": instructions[0], "lang": None}
        with self._episode_rng(), torch.inference_mode():
            action = self.model.step(obs, goal)
        return action.float().cpu().numpy().astype(np.float64).reshape(1, -1)
