"""Measure the shipped policies (baseline, no IVRA) on every split and write ``weights/MODEL_CARD.md``.

    python -m ivra.minivla.card --episodes 200

Numbers in the card come from this run (``weights/card.json``); nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import time

from ivra.minivla.policy import WEIGHTS, MiniVLAPolicy, shipped
from ivra.tabletop import SPLITS
from ivra.tabletop.rollout import rollout

#: Rows beyond the splits: train-split episodes the policy was trained on (seeds 0..) and unseen ones.
TRAIN_ROWS = {"train (its training episodes)": ("train", 0), "train (unseen seeds)": ("train", 1_000_000)}


def measure(episodes: int, chunk: int = 100) -> dict:
    out = {}
    rows = {s: (s, 0) for s in SPLITS if s != "train"} | TRAIN_ROWS
    for regime in shipped():
        policy = MiniVLAPolicy(regime, decode="free")  # the model's own answers; malformed ones fail
        out[regime] = {}
        for name, (split, first) in rows.items():
            res = []
            for start in range(first, first + episodes, chunk):
                seeds = list(range(start, min(first + episodes, start + chunk)))
                res += rollout(policy, split, seeds, policy.spec.image_size)
            fams: dict[str, list[bool]] = {}
            for r in res:
                fams.setdefault(r["task"], []).append(r["success"])
            out[regime][name] = {
                "n": len(res),
                "success": sum(r["success"] for r in res) / len(res),
                "malformed": sum(r["malformed"] for r in res) / len(res),
                "families": {k: sum(v) / len(v) for k, v in sorted(fams.items())},
            }
            print(regime, name, out[regime][name], flush=True)
    return out


def cycles(name: str) -> list[dict]:
    """The shipped settings of run ``name`` (``vision`` or a regime): its earlier cycles oldest first, then it."""
    earlier = sorted(
        WEIGHTS.glob(f"run-{name}-cycle*.json"), key=lambda p: int(p.stem.rpartition("cycle")[2])
    )
    return [json.loads(p.read_text()) for p in [*earlier, WEIGHTS / f"run-{name}.json"]]


def measure_locate(scenes: int) -> dict:
    """Each shipped regime's answers to referring questions about held-out world scenes (:mod:`ivra.minivla.locate`)."""
    from ivra.minivla.locate import locate_accuracy
    from ivra.minivla.policy import load_model

    out = {}
    for regime in shipped():
        model, tok, spec = load_model(regime)
        if "locate" not in tok.stoi:  # trained without the pre-training world: it was never asked
            continue
        out[regime] = locate_accuracy(model.eval(), tok, spec, scenes)
        print(regime, "locate", out[regime], flush=True)
    return out


def lm_stage_line(regime: str, r: dict, number: int, start: str | None = None) -> str:
    """The card's line for one projector + Llama stage of ``regime`` (its ``run.json`` ``r``); ``start`` says where
    it started (default: the stage above, or from scratch)."""
    stop = f" (stopped at step {r['stop']} of that schedule)" if r.get("stop") else ""
    start = start or ("continued from the stage above, " if r.get("init") else "from scratch, ")
    if r.get("stage") == "train_grounding":
        return (
            f"2. Vision-language pre-training (for `{regime}`): projector + Llama, {start}answer referring "
            f'questions ("locate the pink heart" -> its centre bins) about {r["scenes"]} world scenes '
            f"({r['questions']} questions; no robot data), {r['steps']} steps of batch {r['batch']}{stop}, "
            f"cosine lr {r['lr']}, seed {r['seed']}, {r['seconds'] / 60:.0f} min."
        )
    mixed = (
        f", co-trained with {r['ground_questions']} referring questions of {r['ground_scenes']} world "
        "scenes mixed in"
        if r.get("ground_scenes")
        else ""
    )
    if r.get("streamed"):
        drawn = (r["stop"] or r["steps"]) * r["batch"]
        data = (
            f"train-split episodes (fraction {r['fraction']} of a {r['full_episodes']}-episode set; "
            f"streamed: each batch's episodes rendered on demand, every step of each), "
            f"{r['steps']} steps of batch {r['batch']} episodes ({drawn / r['episodes']:.2f} passes)"
        )
    else:
        data = (
            f"train-split episodes ({r['demo_steps']} steps; fraction {r['fraction']} of a "
            f"{r.get('full_episodes', '?')}-episode set){mixed}, {r['steps']} steps of batch {r['batch']}"
        )
    return (
        f"{number}. `{regime}`: projector + Llama, {start}on expert demonstrations of {r['episodes']} "
        f"{data}{stop}, cosine lr {r['lr']}, seed {r['seed']}, {r['seconds'] / 60:.0f} min."
    )


def write_card(result: dict, episodes: int, locate: dict | None = None) -> None:
    regimes = tuple(result)
    last = json.loads((WEIGHTS / f"run-{regimes[0]}.json").read_text())  # machine and versions
    size_mb = sum(p.stat().st_size for p in WEIGHTS.glob("*.safetensors")) / 1e6
    spec = json.loads((WEIGHTS / "spec.json").read_text())
    lines = [
        "# minivla: the tiny LLaRA-style policy shipped with ivra",
        "",
        "A `transformers` `LlavaForConditionalGeneration`: a CLIP-style ViT "
        f"({spec['vision_layers']} layers, {spec['vision_width']} wide, {spec['image_size']} px, "
        f"{spec['patch_size']} px patches = {(spec['image_size'] // spec['patch_size']) ** 2} visual tokens) and a "
        f"Llama ({spec['text_layers']} layers, {spec['text_width']} wide). Actions are written as text, LLaRA style: "
        "four bins (50 per axis) of `pick_x pick_y place_x place_y`, greedy-decoded with `generate()` under the "
        "action grammar (four number tokens, then <eos>), so every answer is an action, the same as free greedy "
        "decoding's wherever that is well-formed. The numbers below are measured decoding freely "
        '(`decode="free"`): malformed output counts as a failure (`malformed`: the share of such episodes).',
        "",
        "## Training (reproduce with `bash scripts/train_minivla.sh`)",
        "",
    ]
    stages = cycles("vision")
    for i, r in enumerate(stages):
        cycle = f" cycle {i + 1}" if len(stages) > 1 else ""
        if r.get("objective", "clip") != "dense":
            lines.append(
                f"1. Vision tower{cycle}: contrastive (CLIP loss) on {r['n_pairs']} generated train-split scenes and "
                f"their captions, {r['steps']} steps of batch {r['batch']}, {r['seconds'] / 60:.0f} min."
            )
            continue
        acc = r.get("val_patch_accuracy", {})
        start = "continued from the cycle above, " if r.get("init") else "from scratch, "
        weights = r.get("head_weights") or {}
        weighted = (
            " (loss weights: " + ", ".join(f"{k} x{w:g}" for k, w in weights.items()) + ")" if weights else ""
        )
        what = (
            "position-aware pre-training (`ivra.minivla.dense`): linear heads on the patch features the LLaVA "
            "projector reads learn, per patch, the colour/shape/size of the object there and the absolute bin of "
            "its centre (and the same for containers); "
            if i == 0
            else "the same dense objective; "
        )
        data = (
            f"{r['n_pairs']} world scenes of every colour and shape (`ivra.minivla.world`; {r['n_images']} images)"
            if r.get("scenes") == "world"
            else f"every expert step of {r['n_pairs']} fresh train-split episodes ({r['n_images']} images)"
        )
        novel = r.get("world_novel_accuracy") or {}
        novel_text = (
            f" On world scenes: pink read on {100 * novel['pink_color']:.0f} % of pink-object patches, heart on "
            f"{100 * novel['heart_shape']:.0f} % of heart patches."
            if novel
            else ""
        )
        lines.append(
            f"1. Vision tower{cycle}, {what}{start}on {data}, {r['steps']} steps of batch {r['batch']}, "
            f"lr {r['lr']}{weighted}, "
            f"{r['seconds'] / 60:.0f} min. On val scenes its heads then read the object-centre bin within 2 bins on "
            f"{100 * acc.get('obj_x_within2', float('nan')):.0f} % (x) / "
            f"{100 * acc.get('obj_y_within2', float('nan')):.0f} % (y) of object patches, the colour on "
            f"{100 * acc.get('obj_color', float('nan')):.0f} %, the shape on "
            f"{100 * acc.get('obj_shape', float('nan')):.0f} %, the size on "
            f"{100 * acc.get('obj_size', float('nan')):.0f} %.{novel_text}"
        )
    lines.append("   The tower is then frozen.")
    total = sum(r["seconds"] for r in stages)
    described: list[tuple[str, dict]] = []  # (regime, run) already on the card: a later regime continuing
    number = 1  # from a shipped one names it instead of repeating (and counting) its stages
    for regime in regimes:
        schedule = cycles(regime)
        number += 2 if any(r.get("stage") == "train_grounding" for r in schedule) else 1
        owner = None
        for r in schedule:
            earlier = [name for name, done in described if done == r]
            if earlier:
                owner = earlier[0]
                continue
            start = f"continued from `{owner}` as shipped (above), " if owner else None
            lines.append(lm_stage_line(regime, r, number, start))
            described.append((regime, r))
            owner = None
            total += r["seconds"]
    total /= 60
    lines += [
        "",
        f"Machine: {last.get('machine', 'x86_64, 2 CPU cores')} (the cores shared with other jobs at "
        f"times), torch {last['torch']}, transformers {last['transformers']}; "
        f"training time {total:.0f} min in all (data generation not included). Training logs: `train-log-*.jsonl`; "
        "run settings: `run-*.json`. What was tried before this recipe, with numbers: `docs/minivla-experiments.md`.",
        f"Weights: fp16 safetensors, vision tower stored once, {size_mb:.1f} MB in all (loaded as float32).",
        "",
        f"## Measured success (no IVRA), {episodes} episodes per row (`python -m ivra.minivla.card`)",
        "",
        "Held-out seeds for every split; the two train rows tell memorisation (its own training episodes) from "
        "generalisation within the training distribution (train-split seeds it never saw).",
        "",
        "| split | " + " | ".join(regimes) + " |",
        "|---|" + "---:|" * len(regimes),
    ]
    for row in result[regimes[0]]:
        cells = [f"{100 * result[r][row]['success']:.1f} %" for r in regimes]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    fams = list(result[regimes[0]]["val"]["families"])
    lines += ["", f"Per task family (`{regimes[0]}`):", "", "| split | " + " | ".join(fams) + " |"]
    lines.append("|---|" + "---:|" * len(fams))
    for row, res in result[regimes[0]].items():
        cells = [f"{100 * res['families'].get(f, float('nan')):.0f} %" for f in fams]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "A uniform random policy succeeds in about 0.4 % of episodes (tests/tabletop)."]
    for regime, res in (locate or {}).items():
        lines += [
            "",
            f"Referring questions after policy training (`{regime}`, `python -m ivra.minivla.locate {regime}`): on "
            f"{res['all']['n']} questions about held-out world scenes it answers within 2 bins of the referent's "
            f"centre on {100 * res['all']['within2']:.1f} %; on the {res['novel']['n']} that name pink or a heart "
            f"(never in the robot data) {100 * res['novel']['within2']:.1f} %, on the rest "
            f"{100 * res['seen']['within2']:.1f} %.",
        ]
    (WEIGHTS / "MODEL_CARD.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument(
        "--scenes", type=int, default=300, help="held-out world scenes for the referring questions"
    )
    args = parser.parse_args()
    t0 = time.time()
    result = measure(args.episodes)
    locate = measure_locate(args.scenes)
    record = {"episodes": args.episodes, "success": result} | ({"locate": locate} if locate else {})
    (WEIGHTS / "card.json").write_text(json.dumps(record, indent=2))
    write_card(result, args.episodes, locate)
    print(f"wrote {WEIGHTS / 'MODEL_CARD.md'} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
