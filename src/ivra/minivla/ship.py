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


def _run_dir(init: str) -> Path:
    """A run's ``init``: a policy run's directory, or a vision run's ``vision.safetensors`` inside its directory."""
    path = Path(init)
    return path if path.is_dir() else path.parent


def copy_run_logs(run: Path, dest: Path, name: str) -> None:
    """``run``'s log and settings as ``train-log-NAME.jsonl`` / ``run-NAME.json``, and those of the earlier runs
    it continued from (its ``init`` chain) as ``...-NAME-cycleK``, oldest first."""
    shutil.copy(run / "log.jsonl", dest / f"train-log-{name}.jsonl")
    shutil.copy(run / "run.json", dest / f"run-{name}.json")
    chain, init = [], json.loads((run / "run.json").read_text()).get("init")
    while init:  # newest first
        chain.append(_run_dir(init))
        init = json.loads((chain[-1] / "run.json").read_text()).get("init")
    for i, earlier in enumerate(reversed(chain), start=1):
        shutil.copy(earlier / "log.jsonl", dest / f"train-log-{name}-cycle{i}.jsonl")
        shutil.copy(earlier / "run.json", dest / f"run-{name}-cycle{i}.json")


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
        copy_run_logs(run, dest, regime)
    for name in ("spec.json", "tokenizer.json"):
        shutil.copy(runs / f"policy-{trained[0]}" / name, dest / name)
    # the vision run the policies were trained on (recorded in their run.json; older runs: runs/vision)
    recorded = json.loads((runs / f"policy-{trained[0]}" / "run.json").read_text()).get("vision")
    copy_run_logs(Path(recorded).parent if recorded else runs / "vision", dest, "vision")
    print(f"shipped {', '.join(trained)}: {sorted(p.name for p in dest.iterdir())} to {dest}")


if __name__ == "__main__":
    ship(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/train"))
