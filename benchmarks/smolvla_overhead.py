"""IVRA's cost per action chunk on lerobot's SmolVLA at its real size (random weights), in interleaved pairs.

Run in the lerobot environment:  .nox/lerobot/bin/python benchmarks/smolvla_overhead.py [--pairs 6]

The VLM has SmolVLM2-500M-Video-Instruct's published shape (text: Llama, width 960, 32 layers of which SmolVLA
keeps 16, 15 heads / 5 KV heads of 64, MLP 2560, vocabulary 49280; vision: SigLIP, width 768, 12 layers,
12 heads, MLP 3072, 512 px, patch 16; pixel shuffle 4 -> 64 tokens per camera), SmolVLA's defaults otherwise
(expert width 0.75, cross-attention every other layer, chunk 50, 10 denoising steps), two 512 px cameras as in
LIBERO, IVRA at the middle VLM layer 8 with lam 0.3. Each pair runs ``predict_action_chunk`` once without and
once with IVRA (random order per pair, same batch and noise); the IVRA arm's time inside IVRA's hooks is
``handle.stats.hook_seconds``. Reported: hook time as a share of the chunk, the median paired ratio with a
bootstrap 95 % interval. Target: hook share <= 0.5 %.

Writes runs/benchmarks/smolvla_overhead_<device>.json (untracked; ``--out`` or $IVRA_BENCH_OUT_DIR to write
elsewhere). ``--record`` (or IVRA_BENCH_RECORD=1) updates the recorded result, the tracked
benchmarks/results/smolvla_overhead_<device>.json, instead: do that only for a run you mean to publish.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch
from scipy.stats import bootstrap

import ivra
from ivra.tiny import lerobot as tl

TEXT = dict(
    vocab_size=49280,
    hidden_size=960,
    intermediate_size=2560,
    num_hidden_layers=32,
    num_attention_heads=15,
    num_key_value_heads=5,
    head_dim=64,
    rope_theta=100000.0,
    max_position_embeddings=8192,
)
VISION = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16
)


def build(device: str):
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    torch.manual_seed(0)
    folder = tl.smolvlm_folder(image_size=512, text=TEXT, vision=VISION, scale_factor=4)
    inputs, outputs = tl._features(512)
    cfg = SmolVLAConfig(
        vlm_model_name=str(folder),
        load_vlm_weights=False,
        max_state_dim=32,
        max_action_dim=32,
        device=device,
        input_features=inputs,
        output_features=outputs,
    )
    return SmolVLAPolicy(cfg).to(device).eval()


ROOT = Path(__file__).resolve().parents[1]


def output_path(args: argparse.Namespace) -> Path:
    """--out, else the tracked recorded result with --record, else runs/benchmarks/ (untracked)."""
    name = f"smolvla_overhead_{args.device.split(':')[0]}.json"
    if args.out:
        return Path(args.out)
    if args.record:
        return ROOT / "benchmarks" / "results" / name
    return Path(os.environ.get("IVRA_BENCH_OUT_DIR") or ROOT / "runs" / "benchmarks") / name


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=6, help="interleaved baseline/IVRA pairs (default 6)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--layer", type=int, default=8, help="VLM layer IVRA edits (default 8)")
    ap.add_argument(
        "--out",
        default=None,
        help="result JSON (default runs/benchmarks/smolvla_overhead_<device>.json, untracked; "
        "$IVRA_BENCH_OUT_DIR changes the folder)",
    )
    ap.add_argument(
        "--record",
        action="store_true",
        default=os.environ.get("IVRA_BENCH_RECORD", "") not in ("", "0"),
        help="update the recorded result benchmarks/results/smolvla_overhead_<device>.json (tracked; also "
        "IVRA_BENCH_RECORD=1)",
    )
    return ap


def main() -> None:
    args = parser().parse_args()
    pol = build(args.device)
    n_params = sum(p.numel() for p in pol.parameters())
    batch = {k: v.to(args.device) for k, v in tl.batch(pol, batch_size=1, lang_len=16).items()}
    noise = tl.noise(pol, batch_size=1).to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def chunk():
        sync()
        t0 = time.perf_counter()
        pol.predict_action_chunk({k: v.clone() for k, v in batch.items()}, noise=noise.clone())
        sync()
        return time.perf_counter() - t0

    chunk()  # warm-up
    rng = random.Random(0)
    base_t, ivra_t, hook_t, calls = [], [], [], []
    for _ in range(args.pairs):
        order = ["base", "ivra"]
        rng.shuffle(order)
        for arm in order:
            if arm == "base":
                base_t.append(chunk())
            else:
                with ivra.attach(pol, layer=args.layer, lam=0.3) as h:
                    ivra_t.append(chunk())
                hook_t.append(h.stats.hook_seconds)
                calls.append(h.stats.calls)
    ratios = [b / a for a, b in zip(base_t, ivra_t)]
    ci = bootstrap((ratios,), statistics.median, n_resamples=2000, random_state=0, method="percentile")
    share = [h / t for h, t in zip(hook_t, ivra_t)]
    result = {
        "what": "SmolVLA predict_action_chunk, baseline vs IVRA, interleaved pairs",
        "params": n_params,
        "device": args.device
        if args.device != "cpu"
        else f"cpu ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "cameras": 2,
        "visual_tokens": 2 * 64,
        "layer": args.layer,
        "lam": 0.3,
        "pairs": args.pairs,
        "baseline_s_median": statistics.median(base_t),
        "ivra_s_median": statistics.median(ivra_t),
        "hook_s_median": statistics.median(hook_t),
        "hook_share_median_pct": 100 * statistics.median(share),
        "hook_share_max_pct": 100 * max(share),
        "ivra_calls_per_chunk": sorted(set(calls)),
        "paired_ratio_median": statistics.median(ratios),
        "paired_ratio_ci95": [ci.confidence_interval.low, ci.confidence_interval.high],
        "target_hook_share_pct": 0.5,
    }
    print(json.dumps(result, indent=2))
    out = output_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
