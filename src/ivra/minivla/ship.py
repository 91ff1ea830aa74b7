"""Copy trained runs into the package's ``weights/`` folder: vision tower once, LM+projector per regime (fp16).

    python -m ivra.minivla.ship runs/train

Every regime trained in ``runs`` (``policy-low``, ``policy-full``) is shipped; a regime shipped before but not in
``runs`` is removed, since the shipped regimes must share one vision tower.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from ivra.minivla.policy import REGIMES, WEIGHTS

VISION_PREFIX = "model.vision_tower."


def ship(runs: Path, dest: Path = WEIGHTS) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    trained = [r for r in REGIMES if (runs / f"policy-{r}" / "model.safetensors").exists()]
    if not trained:
        raise SystemExit(
            f"no trained policy in {runs} (expected {', '.join(f'policy-{r}' for r in REGIMES)})"
        )
    vision = None
    for stale in dest.glob("*"):
        if stale.name.startswith(("train-log-", "run-")) or stale.suffix == ".safetensors":
            stale.unlink()
    for regime in trained:
        run = runs / f"policy-{regime}"
        state = load_file(str(run / "model.safetensors"))
        v = {k: t for k, t in state.items() if k.startswith(VISION_PREFIX)}
        if vision is None:
            vision = v
            save_file(v, str(dest / "vision.safetensors"))
        elif any(not t.equal(vision[k]) for k, t in v.items()):
            raise ValueError("the regimes were trained on different vision towers")
        rest = {k: t for k, t in state.items() if not k.startswith(VISION_PREFIX)}
        save_file(rest, str(dest / f"{regime}.safetensors"))
        shutil.copy(run / "log.jsonl", dest / f"train-log-{regime}.jsonl")
        shutil.copy(run / "run.json", dest / f"run-{regime}.json")
        chain, init = [], json.loads((run / "run.json").read_text()).get("init")
        while init:  # the earlier schedule cycles this run continued from, newest first
            chain.append(Path(init))
            init = json.loads((Path(init) / "run.json").read_text()).get("init")
        for i, earlier in enumerate(reversed(chain), start=1):
            shutil.copy(earlier / "log.jsonl", dest / f"train-log-{regime}-cycle{i}.jsonl")
            shutil.copy(earlier / "run.json", dest / f"run-{regime}-cycle{i}.json")
    for name in ("spec.json", "tokenizer.json"):
        shutil.copy(runs / f"policy-{trained[0]}" / name, dest / name)
    # the vision run the policies were trained on (recorded in their run.json; older runs: runs/vision), and the
    # earlier runs it continued from (``init``), shipped as vision cycles like the policy's schedule cycles
    recorded = json.loads((runs / f"policy-{trained[0]}" / "run.json").read_text()).get("vision")
    vision_run = Path(recorded).parent if recorded else runs / "vision"
    shutil.copy(vision_run / "log.jsonl", dest / "train-log-vision.jsonl")
    shutil.copy(vision_run / "run.json", dest / "run-vision.json")
    chain, init = [], json.loads((vision_run / "run.json").read_text()).get("init")
    while init:
        chain.append(Path(init).parent)
        init = json.loads((Path(init).parent / "run.json").read_text()).get("init")
    for i, earlier in enumerate(reversed(chain), start=1):
        shutil.copy(earlier / "log.jsonl", dest / f"train-log-vision-cycle{i}.jsonl")
        shutil.copy(earlier / "run.json", dest / f"run-vision-cycle{i}.json")
    print(f"shipped {', '.join(trained)}: {sorted(p.name for p in dest.iterdir())} to {dest}")


if __name__ == "__main__":
    ship(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/train"))
