"""Copy trained runs into the package's ``weights/`` folder: vision tower once, LM+projector per regime (fp16)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from ivra.minivla.policy import WEIGHTS

VISION_PREFIX = "model.vision_tower."


def ship(runs: Path, dest: Path = WEIGHTS) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    vision = None
    if (dest / "vision.safetensors").exists():
        vision = load_file(str(dest / "vision.safetensors"))
    for regime in ("low", "full"):
        if not (runs / f"policy-{regime}" / "model.safetensors").exists():
            print(f"skipping {regime}: no trained run in {runs}")
            continue
        state = load_file(str(runs / f"policy-{regime}" / "model.safetensors"))
        v = {k: t for k, t in state.items() if k.startswith(VISION_PREFIX)}
        if vision is None:
            vision = v
            save_file(v, str(dest / "vision.safetensors"))
        elif any(not t.equal(vision[k]) for k, t in v.items()):
            raise ValueError("the two regimes were trained on different vision towers")
        save_file(
            {k: t for k, t in state.items() if not k.startswith(VISION_PREFIX)},
            str(dest / f"{regime}.safetensors"),
        )
        shutil.copy(runs / f"policy-{regime}" / "log.jsonl", dest / f"train-log-{regime}.jsonl")
        shutil.copy(runs / f"policy-{regime}" / "run.json", dest / f"run-{regime}.json")
    for name in ("spec.json", "tokenizer.json"):
        shutil.copy(runs / "policy-low" / name, dest / name)
    shutil.copy(runs / "vision" / "log.jsonl", dest / "train-log-vision.jsonl")
    shutil.copy(runs / "vision" / "run.json", dest / "run-vision.json")
    print(f"shipped {sorted(p.name for p in dest.iterdir())} to {dest}")


if __name__ == "__main__":
    ship(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/train"))
