"""Load the shipped (or a self-trained) tiny policy and wrap it in the common :class:`ivra.policies.Policy` API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ivra.minivla.model import MiniVLASpec, build_policy, predict
from ivra.minivla.tokenizer import WordTokenizer
from ivra.policies.base import IVRASwitch, SingleStep

WEIGHTS = Path(__file__).parent / "weights"
REGIMES = ("low", "full")


def shipped(weights_dir: str | Path | None = None) -> tuple[str, ...]:
    """The regimes whose weights are in the package (or in ``weights_dir``)."""
    folder = Path(weights_dir) if weights_dir else WEIGHTS
    return tuple(r for r in REGIMES if (folder / f"{r}.safetensors").exists())


def load_model(which: str = "low", weights_dir: str | Path | None = None):
    """``which``: a shipped regime (``low`` = 12 % of the demonstrations, ``full``) or a training run directory.

    Shipped weights are fp16 safetensors (vision tower stored once, ``vision.safetensors``); they are loaded in
    float32. Returns ``(model, tokenizer, spec)``.
    """
    path = Path(which)
    if path.is_dir():  # a run directory written by ivra.minivla.train
        folder, files = path, [path / "model.safetensors"]
    else:
        if which not in REGIMES:
            raise ValueError(
                f"unknown policy {which!r}: expected a shipped regime ({' | '.join(shipped(weights_dir)) or 'none'}) or a training run directory"
            )
        folder = Path(weights_dir) if weights_dir else WEIGHTS
        files = [folder / "vision.safetensors", folder / f"{which}.safetensors"]
        if (folder / "vision.safetensors").exists() and which not in shipped(folder):
            raise FileNotFoundError(
                f"policy {which!r} is not shipped in this version (shipped: {', '.join(shipped(folder))}); "
                "see src/ivra/minivla/weights/MODEL_CARD.md, or train it with `ivra train policy`"
            )
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(
            f"policy weights not found: {missing} (train them with scripts/train_minivla.sh)"
        )
    spec = MiniVLASpec(**json.loads((folder / "spec.json").read_text()))
    tok = WordTokenizer.load(folder / "tokenizer.json")
    model = build_policy(spec, tok)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    state = _match_vision_prefix(state, model.state_dict().keys())
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval(), tok, spec


def _match_vision_prefix(state: dict, model_keys) -> dict:
    """Older transformers (e.g. 5.5, lerobot's environment) nest the CLIP vision tower one level deeper
    (``vision_tower.vision_model.*``) than the version the weights were saved with (``vision_tower.*``)."""
    flat, nested = "model.vision_tower.", "model.vision_tower.vision_model."
    keys = set(model_keys)
    if any(k.startswith(nested) for k in keys) and not any(k.startswith(nested) for k in state):
        return {(nested + k[len(flat) :] if k.startswith(flat) else k): v for k, v in state.items()}
    return state


class MiniVLAPolicy(SingleStep, IVRASwitch):
    """Greedy text-action decoding under the action grammar (four number tokens, then <eos>: see
    :func:`ivra.minivla.model.action_grammar`), so that every answer is an action; ``malformed`` counts the rows
    where free decoding would have left the grammar. ``decode="free"`` decodes without it, as the model card's
    numbers were measured: malformed rows are then NaN (the episode runner ends such an episode as a failure and
    names it; ``ivra serve`` refuses to send them)."""

    #: what a NaN row of this policy means (``ivra serve`` says it in the error it answers instead)
    nonfinite_means = (
        "its action tokens could not be decoded (not four number tokens then <eos>: malformed output)"
    )

    def __init__(self, which: str = "low", weights_dir: str | Path | None = None, decode: str = "grammar"):
        if decode not in ("grammar", "free"):
            raise ValueError(f"decode must be 'grammar' or 'free', got {decode!r}")
        self.decode = decode
        self.model, self.tokenizer, self.spec = load_model(which, weights_dir)
        self.name = f"minivla-{Path(which).name}"
        self.malformed = 0
        self.ivra_target = self.model

    per_sample_ivra = True  # act(..., ivra=[cfg or None per row]) runs both arms in one batch

    def act(
        self,
        observations: list[dict[str, Any]],
        instructions: list[str],
        ivra: list[dict | None] | None = None,
    ) -> np.ndarray:
        """Actions (B, 4); ``ivra``: one IVRA setting (or None) per row, all in one batch, instead of the
        setting of :meth:`set_ivra`."""
        if ivra is None:
            return self._predict(observations, instructions)
        return self.act_per_sample(observations, instructions, ivra, self._predict)

    def _predict(self, observations, instructions) -> np.ndarray:
        images = np.stack([o["image"] for o in observations])
        actions, ok = predict(
            self.model, self.tokenizer, self.spec, images, instructions, grammar=self.decode == "grammar"
        )
        self.malformed += ok.count(False)
        return actions
