"""lerobot policies (SmolVLA, pi0, pi0.5) under the chunk contract (:mod:`ivra.policies.base`), with IVRA per row.

``--policy lerobot:smolvla --policy-kwargs path=CHECKPOINT`` (``ivra eval libero``, ``ivra serve``) builds
``LerobotPolicy(kind="smolvla", path=CHECKPOINT)``. What it does, following lerobot 0.6.1's own LIBERO path:

* loads the policy with ``from_pretrained(path)`` (a local folder, or a hub name where the hub is reachable)
  and its saved pre/post-processors with ``make_pre_post_processors(config, pretrained_path=path)``: lerobot's own
  normalisation, tokenisation and un-normalisation. ``tokenizer=FOLDER`` swaps in a local tokenizer for offline
  machines (the saved pipeline names a hub tokenizer, e.g. PaliGemma's);
* maps an observation the way lerobot's LIBERO env + ``LiberoProcessorStep`` do: the third-person and wrist
  images (``image`` and ``wrist_image``, already rotated 180 degrees by ivra's LIBERO job, as lerobot's processor
  does) become ``observation.images.image`` and ``observation.images.image2`` in [0, 1] CHW; the robot state is
  either ivra's 9-d LIBERO state (eef position, eef quaternion xyzw, 2 gripper joints), turned into lerobot's
  8-d layout (position, axis-angle, gripper), or already that 8-d layout (what openpi's LIBERO client sends);
  camera keys are configurable (``cameras=a,b``) for checkpoints trained with other names;
* ``predict`` makes ONE batched pre-process and ONE ``predict_action_chunk(batch, noise=noise)`` for all rows; row
  i's flow-matching noise, shape (chunk_size, max_action_dim), is drawn from ``torch.Generator().manual_seed(
  seeds[i])``, so a row gets the same noise alone or in any batch and both arms of a pair share it; every step of
  the chunk goes through lerobot's post-processor: (B, chunk_size, action_dim). ``chunk_length`` is the config's
  ``chunk_size`` and ``execute_steps`` its ``n_action_steps``: an :class:`ivra.episodes.EpisodeRunner` with those
  steps reproduces lerobot's own ``select_action`` queue (tested against it);
* IVRA per row: ``predict(..., ivra=[cfg or None per row])`` runs mixed arms in that one batch (one handle per
  setting restricted to its rows); ``set_ivra(cfg)`` attaches IVRA to every row until detached. IVRA edits the
  prefix prefill, once per chunk.

No episode state: no ``reset``, no action queue, no generator kept between calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ivra.policies.base import IVRASwitch, row_seeds

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


def lerobot_state(state: np.ndarray) -> np.ndarray:
    """One observation's state as lerobot's 8-d LIBERO state: ivra's 9-d one converted, an 8-d one (already
    lerobot's layout) as it is; anything else is refused in one line."""
    s = np.asarray(state, dtype=np.float64)
    if s.shape == (9,):
        return libero_state(s)
    if s.shape == (8,):
        return s.astype(np.float32)
    raise ValueError(
        f"observation 'state' of shape {s.shape}: expected 8-d (lerobot's LIBERO layout: eef pos 3, axis-angle 3, "
        "gripper 2) or 9-d (ivra's: eef pos 3, quat xyzw 4, gripper 2)"
    )


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
    """A lerobot flow-matching VLA under the chunk contract: ``predict(observations, instructions, seeds, ivra)``
    -> (B, chunk_size, action_dim), ``set_ivra(cfg)``; see the module docstring."""

    per_sample_ivra = True  # predict(..., ivra=[...]): mixed arms in one batch (row-masked handles)

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
        cfg = self.policy.config
        #: actions per predicted chunk (the config's chunk_size) and executed per chunk by default (n_action_steps)
        self.chunk_length, self.execute_steps = int(cfg.chunk_size), int(cfg.n_action_steps)
        self.ivra_target = self.policy

    # -- the chunk contract ---------------------------------------------------------------------------------------
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
            np.stack([lerobot_state(o["state"]) for o in observations])
        )
        out["task"] = [s.strip() for s in instructions]
        return out

    def noise(self, seeds: list[int]):
        """The flow-matching noise of a call: row i drawn from ``torch.Generator().manual_seed(seeds[i])``,
        (B, chunk_size, max_action_dim) float32 on the policy's device."""
        import torch

        cfg = self.policy.config
        rows = [
            torch.randn(cfg.chunk_size, cfg.max_action_dim, generator=torch.Generator().manual_seed(int(s)))
            for s in seeds
        ]
        return torch.stack(rows).to(self.device)

    def predict(self, observations, instructions, seeds=None, ivra=None) -> np.ndarray:
        """(B, chunk_size, action_dim): one batched pre-process and chunk prediction for all rows."""
        n = len(observations)
        if len(instructions) != n:
            raise ValueError(f"{len(instructions)} instructions for a batch of {n} observations")
        seeds = row_seeds(seeds, n)
        if ivra is None:
            return self._chunks(observations, instructions, seeds)
        # SampleArms hands back the whole batch (every row, in order), its handles restricted to their rows
        return self.act_per_sample(
            observations, instructions, list(ivra), lambda obs, texts: self._chunks(obs, texts, seeds)
        )

    def _chunks(self, observations, instructions, seeds) -> np.ndarray:
        import torch

        batch = self.preprocessor(self.batch(observations, instructions))
        with torch.no_grad():
            chunk = self.policy.predict_action_chunk(batch, noise=self.noise(seeds))
            steps = [self.postprocessor(chunk[:, t]) for t in range(chunk.shape[1])]
        return np.stack([np.asarray(a.float().cpu().numpy(), dtype=np.float64) for a in steps], axis=1)
