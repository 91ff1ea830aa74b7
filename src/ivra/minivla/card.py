"""Measure the shipped policies (baseline, no IVRA) on every split and write ``weights/MODEL_CARD.md``.

    python -m ivra.minivla.card --episodes 200

Numbers in the card come from this run (``weights/card.json``); nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import time

from ivra.minivla.policy import REGIMES, WEIGHTS, MiniVLAPolicy
from ivra.tabletop import SPLITS
from ivra.tabletop.rollout import rollout


def measure(episodes: int, chunk: int = 100) -> dict:
    out = {}
    for regime in REGIMES:
        policy = MiniVLAPolicy(regime)
        out[regime] = {}
        for split in SPLITS:
            res = []
            for start in range(0, episodes, chunk):
                res += rollout(
                    policy, split, list(range(start, min(episodes, start + chunk))), policy.spec.image_size
                )
            out[regime][split] = {
                "n": len(res),
                "success": sum(r["success"] for r in res) / len(res),
                "malformed": sum(r["malformed"] for r in res) / len(res),
            }
            print(regime, split, out[regime][split], flush=True)
    return out


def write_card(result: dict, episodes: int) -> None:
    runs = {name: json.loads((WEIGHTS / f"run-{name}.json").read_text()) for name in ("vision", *REGIMES)}
    size_mb = sum(p.stat().st_size for p in WEIGHTS.glob("*.safetensors")) / 1e6
    spec = json.loads((WEIGHTS / "spec.json").read_text())
    lines = [
        "# minivla: the tiny LLaRA-style policy shipped with ivra",
        "",
        "A `transformers` `LlavaForConditionalGeneration`: a CLIP-style ViT "
        f"({spec['vision_layers']} layers, {spec['vision_width']} wide, {spec['image_size']} px, "
        f"{spec['patch_size']} px patches = {(spec['image_size'] // spec['patch_size']) ** 2} visual tokens) and a "
        f"Llama ({spec['text_layers']} layers, {spec['text_width']} wide). Actions are written as text, LLaRA style: "
        "four bins (50 per axis) of `pick_x pick_y place_x place_y`, greedy-decoded with `generate()`; "
        "malformed output counts as a failure.",
        "",
        "## Training (reproduce with `bash scripts/train_minivla.sh`)",
        "",
        f"1. Vision tower: contrastive (CLIP loss) on {runs['vision']['n_pairs']} generated train-split scenes and "
        f"their captions, {runs['vision']['steps']} steps of batch {runs['vision']['batch']}, "
        f"{runs['vision']['seconds'] / 60:.0f} min; then frozen.",
    ]
    for regime in REGIMES:
        r = runs[regime]
        lines.append(
            f"2. `{regime}`: projector + Llama on expert demonstrations of {r['episodes']} train-split episodes "
            f"({r['demo_steps']} steps, fraction {r['fraction']}), {r['steps']} steps of batch {r['batch']}, lr "
            f"{r['lr']}, seed {r['seed']}, {r['seconds'] / 60:.0f} min."
        )
    lines += [
        "",
        f"Machine: 2-core x86_64 CPU, torch {runs['low']['torch']}, transformers {runs['low']['transformers']}. "
        "Training logs: `train-log-*.jsonl`; run settings: `run-*.json`.",
        f"Weights: fp16 safetensors, vision tower stored once, {size_mb:.1f} MB in all (loaded as float32).",
        "",
        f"## Measured success (no IVRA), {episodes} episodes per split (`python -m ivra.minivla.card`)",
        "",
        "| split | " + " | ".join(REGIMES) + " |",
        "|---|" + "---:|" * len(REGIMES),
    ]
    for split in SPLITS:
        cells = [f"{100 * result[r][split]['success']:.1f} %" for r in REGIMES]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    lines += ["", "A uniform random policy succeeds in about 0.4 % of episodes (tests/tabletop)."]
    (WEIGHTS / "MODEL_CARD.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    t0 = time.time()
    result = measure(args.episodes)
    (WEIGHTS / "card.json").write_text(json.dumps({"episodes": args.episodes, "success": result}, indent=2))
    write_card(result, args.episodes)
    print(f"wrote {WEIGHTS / 'MODEL_CARD.md'} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
