"""lerobot policies (SmolVLA, pi0, pi0.5) behind the benchmark-agnostic policy interface, with IVRA per arm.

``--policy lerobot:smolvla --policy-kwargs path=CHECKPOINT`` (``ivra eval libero``) builds
``LerobotPolicy(kind="smolvla", path=CHECKPOINT)``. What it does, following lerobot 0.6.1's own LIBERO path:

* loads the policy with ``from_pretrained(path)`` (a local folder, or a hub name where the hub is reachable)
  and its saved pre/post-processors with ``make_pre_post_processors(config, pretrained_path=path)``: lerobot's own
  normalisation, tokenisation and un-normalisation. ``tokenizer=FOLDER`` swaps in a local tokenizer for offline
  machines (the saved pipeline names a hub tokenizer, e.g. PaliGemma's);
* maps an observation the way lerobot's LIBERO env + ``LiberoProcessorStep`` do: the third-person and wrist
  images (``image`` and ``wrist_image``, already rotated 180 degrees by ivra's LIBERO job, as lerobot's processor
  does) become ``observation.images.image`` and ``observation.images.image2`` in [0, 1] CHW, and the 9-d robot
  state (eef position, eef quaternion xyzw, 2 gripper joints) becomes lerobot's 8-d state (position, axis-angle,
  gripper); camera keys are configurable (``cameras=a,b``) for checkpoints trained with other names;
* predicts a chunk with the flow-matching noise drawn from the episode seed (``reset(seed)``), so both arms of a
  pair see the same noise, and executes ``n_action_steps`` of it before predicting again (lerobot's queue);
* ``set_ivra(cfg)`` attaches IVRA to the policy (the prefix prefill of each chunk) or detaches it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ivra.policies.base import IVRASwitch

KINDS = ("smolvla", "pi0", "pi05")
LIBERO_CAMERAS = ("observation.images.image", "observation.images.image2")


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) in (x, y, z, w) order -> axis-angle vectors (..., 3) (angle in [0, pi])."""
    q = np.asarray(quat, dtype=np.float64)
    w = np.clip(q[..., 3], -1.0, 1.0)
    den = np.sqrt(np.maximum(1.0 - w * w, 0.0))
    angle = 2.0 * np.arccos(w)
    scale = np.where(den > 1e-10, angle / np.where(den > 1e-10, den, 1.0), 0.0)
    return q[..., :3] * scale[..., None]


def libero_state(state9: np.ndarray) -> np.ndarray:
    """ivra's LIBERO state (pos 3, quat xyzw 4, gripper 2) -> lerobot's (pos 3, axis-angle 3, gripper 2)."""
    s = np.asarray(state9, dtype=np.float64)
    if s.shape[-1] != 9:
        raise ValueError(f"expected a 9-d LIBERO state (eef pos 3, quat 4, gripper 2), got shape {s.shape}")
    return np.concatenate([s[..., :3], quat_to_axis_angle(s[..., 3:7]), s[..., 7:9]], -1).astype(np.float32)


def _policy_class(kind: str):
    if kind == "smolvla":
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

        return SmolVLAPolicy
    if kind == "pi0":
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy

        return PI0Policy
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy

    return PI05Policy


class LerobotPolicy(IVRASwitch):
    """A lerobot flow-matching VLA for ivra's harness: ``reset(seed)``, ``act(observations, instructions)``,
    ``set_ivra(cfg)``."""

    def __init__(
        self,
        kind: str = "smolvla",
        path: str | None = None,
        device: str = "cpu",
        tokenizer: str | None = None,
        cameras: str | tuple[str, ...] = LIBERO_CAMERAS,
        policy: Any = None,
        processors: tuple[Any, Any] | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown lerobot policy kind {kind!r}; expected one of {KINDS}")
        if (policy is None) == (path is None):
            raise ValueError("give exactly one of path= (a lerobot checkpoint folder or hub name) or policy=")
        import torch

        self.name = f"lerobot:{kind}"
        self.kind, self.device = kind, torch.device(device)
        self.cameras = tuple(cameras.split(",")) if isinstance(cameras, str) else tuple(cameras)
        if len(self.cameras) != 2:
            raise ValueError(f"cameras must name 2 keys (third-person, wrist), got {self.cameras}")
        if policy is None:
            policy = _policy_class(kind).from_pretrained(path)
        self.policy = policy.to(self.device).eval()
        if processors is None:
            from lerobot.policies.factory import make_pre_post_processors

            overrides: dict[str, Any] = {"device_processor": {"device": str(self.device)}}
            if tokenizer is not None:
                from transformers import AutoTokenizer

                overrides["tokenizer_processor"] = {"tokenizer": AutoTokenizer.from_pretrained(tokenizer)}
            processors = make_pre_post_processors(
                self.policy.config, pretrained_path=path, preprocessor_overrides=overrides
            )
        self.preprocessor, self.postprocessor = processors
        self.ivra_target = self.policy
        self._queue: list[np.ndarray] = []
        self._gen = torch.Generator().manual_seed(0)

    # -- Policy protocol -----------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        import torch

        self._queue = []
        self._gen = torch.Generator().manual_seed(int(seed or 0))
        self.policy.reset()

    def batch(self, observations: list[dict[str, Any]], instructions: list[str]) -> dict[str, Any]:
        """lerobot's raw observation batch (before its pre-processor) for LIBERO-style observations."""
        import torch

        out: dict[str, Any] = {}
        for key, name in zip(self.cameras, ("image", "wrist_image")):
            imgs = np.stack([np.asarray(o[name]) for o in observations])
            if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[-1] != 3:
                raise ValueError(
                    f"observation {name!r} must be HxWx3 uint8 images, got {imgs.dtype} {imgs.shape}"
                )
            out[key] = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(255.0)
        out["observation.state"] = torch.from_numpy(
            np.stack([libero_state(o["state"]) for o in observations])
        )
        out["task"] = [s.strip() for s in instructions]
        return out

    def act(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        import torch

        if not self._queue:
            batch = self.preprocessor(self.batch(observations, instructions))
            cfg = self.policy.config
            noise = torch.randn(
                len(observations), cfg.chunk_size, cfg.max_action_dim, generator=self._gen
            ).to(self.device)
            with torch.no_grad():
                chunk = self.policy.predict_action_chunk(batch, noise=noise)[:, : cfg.n_action_steps]
            for t in range(chunk.shape[1]):
                action = self.postprocessor(chunk[:, t])
                self._queue.append(np.asarray(action.float().cpu().numpy(), dtype=np.float64))
        return self._queue.pop(0)
