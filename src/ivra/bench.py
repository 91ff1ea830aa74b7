"""``ivra bench``: latency of baseline vs IVRA on the same inputs, in interleaved pairs.

For each pair both arms run the same prefill forward (the only step IVRA touches), in alternating order so that
neither arm always runs first. Reported: the median of the per-pair ratios IVRA/baseline with a bootstrap 95 %
interval (scipy), the time spent inside IVRA's hooks per forward, the number of vision-tower passes per forward
(must be 1: IVRA reads the keys from the model's own pass), and the analytic FLOP ratio beside the measured one.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from ivra.cliargs import UsageError, integer, nonneg_int, out_file, positive_int, unit_float

PRESETS = {
    # a CLIP ViT-B/16 at 224 px + a 12-layer, 1536-wide Llama (random weights): a realistic shape that runs here
    "realistic": dict(
        image_size=224,
        patch=16,
        v_width=768,
        v_layers=12,
        v_heads=12,
        t_width=1536,
        t_layers=12,
        t_heads=12,
        t_ffn=4096,
        vocab=32000,
        text_tokens=32,
        layer=7,
        batch=1,
    ),
    # LLaVA-7B / LLaRA shape (CLIP ViT-L/14 at 336 px, 32-layer 4096-wide Llama): for GPU machines
    "llava7b": dict(
        image_size=336,
        patch=14,
        v_width=1024,
        v_layers=24,
        v_heads=16,
        t_width=4096,
        t_layers=32,
        t_heads=32,
        t_ffn=11008,
        vocab=32000,
        text_tokens=48,
        layer=20,
        batch=1,
    ),
    "tiny": dict(
        image_size=32,
        patch=8,
        v_width=32,
        v_layers=3,
        v_heads=4,
        t_width=64,
        t_layers=4,
        t_heads=4,
        t_ffn=128,
        vocab=128,
        text_tokens=8,
        layer=2,
        batch=2,
    ),
}


def build(preset: dict, dtype=torch.float32, device="cpu", seed: int = 0):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    p = preset
    torch.manual_seed(seed)
    vc = CLIPVisionConfig(
        hidden_size=p["v_width"],
        intermediate_size=4 * p["v_width"],
        num_hidden_layers=p["v_layers"],
        num_attention_heads=p["v_heads"],
        image_size=p["image_size"],
        patch_size=p["patch"],
    )
    tc = LlamaConfig(
        hidden_size=p["t_width"],
        intermediate_size=p["t_ffn"],
        num_hidden_layers=p["t_layers"],
        num_attention_heads=p["t_heads"],
        num_key_value_heads=p["t_heads"],
        vocab_size=p["vocab"],
        max_position_embeddings=4096,
    )
    cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_id=p["vocab"] - 1)
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlavaForConditionalGeneration(cfg)
    model = model.to(dtype).eval()
    n_img = (p["image_size"] // p["patch"]) ** 2
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(1, p["vocab"] - 2, (p["batch"], p["text_tokens"]), generator=g)
    ids = torch.cat([text[:, :4], torch.full((p["batch"], n_img), p["vocab"] - 1), text[:, 4:]], 1)
    inputs = {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "pixel_values": torch.randn(p["batch"], 3, p["image_size"], p["image_size"], generator=g).to(
            device, dtype
        ),
    }
    return model, inputs, n_img


def analytic_flops(p: dict, n_img: int) -> dict:
    """Multiply-adds x 2 of one prefill forward and of IVRA's extra work (matmul terms only)."""
    b, dv, lv, dt, lt = p["batch"], p["v_width"], p["v_layers"], p["t_width"], p["t_layers"]
    nv = n_img + 1
    vision = lv * (2 * nv * 12 * dv * dv + 4 * nv * nv * dv)
    s = n_img + p["text_tokens"]
    lm = lt * (2 * s * (4 * dt * dt + 3 * dt * p["t_ffn"]) + 4 * s * s * dt) + 2 * s * dt * p["vocab"]
    projector = 2 * n_img * (dv * dt + dt * dt)
    # IVRA: cosine affinity (n^2 Dk), weights (n^2), pooling (n^2 D), mixing (3 n D)
    ivra = 2 * n_img * n_img * dv + 2 * n_img * n_img + 2 * n_img * n_img * dt + 3 * n_img * dt
    base = b * (vision + lm + projector)
    return {"baseline_flops": base, "ivra_extra_flops": b * ivra, "ratio": 1 + b * ivra / base}


def run(
    preset_name: str,
    pairs: int = 10,
    warmup: int = 2,
    dtype: str = "float32",
    device: str = "cpu",
    layer: int | None = None,
    lam: float = 0.3,
) -> dict:
    from scipy.stats import bootstrap

    import ivra

    p = dict(PRESETS[preset_name])
    torch_dtype = getattr(torch, dtype)
    model, inputs, n_img = build(p, torch_dtype, device)
    cfg = ivra.IVRAConfig(layer=p["layer"] if layer is None else layer, lam=lam)
    vision_calls = []
    counter = model.model.vision_tower.register_forward_hook(lambda *a: vision_calls.append(1))

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def forward():
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(**inputs)
        sync()
        return time.perf_counter() - t0

    handle = None
    try:
        for _ in range(warmup):
            forward()
            with ivra.attach(model, cfg):
                forward()
        base_t, ivra_t, hook_t, passes = [], [], [], []
        for i in range(pairs):
            for arm in ("base", "ivra") if i % 2 == 0 else ("ivra", "base"):
                if arm == "base":
                    base_t.append(forward())
                else:
                    handle = ivra.attach(model, cfg)
                    vision_calls.clear()
                    ivra_t.append(forward())
                    passes.append(len(vision_calls))
                    hook_t.append(handle.stats.hook_seconds)
                    if handle.stats.calls != 1:
                        raise RuntimeError(
                            f"IVRA acted {handle.stats.calls} times in one forward, expected 1"
                        )
                    handle.detach()
                    handle = None
    finally:
        if handle is not None:
            handle.detach()
        counter.remove()
    ratios = [b2 / b1 for b1, b2 in zip(base_t, ivra_t)]
    ci = (
        bootstrap(
            (ratios,),
            statistics.median,
            confidence_level=0.95,
            n_resamples=2000,
            random_state=0,
            method="percentile",
        ).confidence_interval
        if len(ratios) > 2
        else None
    )
    flops = analytic_flops(p, n_img)
    return {
        "preset": preset_name,
        "shape": p,
        "visual_tokens": n_img,
        "dtype": dtype,
        "device": device,
        "ivra": cfg.to_dict(),
        "pairs": pairs,
        "baseline_ms_median": 1e3 * statistics.median(base_t),
        "ivra_ms_median": 1e3 * statistics.median(ivra_t),
        "ratio_median": statistics.median(ratios),
        "ratio_ci95": [ci.low, ci.high] if ci is not None else None,
        "ratio_iqr": [float(x) for x in torch.tensor(ratios).quantile(torch.tensor([0.25, 0.75])).tolist()],
        "hook_ms_median": 1e3 * statistics.median(hook_t),
        "hook_fraction_of_forward": statistics.median(h / b for h, b in zip(hook_t, base_t)),
        "vision_passes_per_forward": sorted(set(passes)),
        "flops": flops,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
        },
    }


#: presets too small to measure IVRA's overhead: what their ratio is instead
SMOKE_TESTS = {
    "tiny": "the tiny preset is a smoke test: a forward of this size takes about a millisecond, so Python overhead "
    "and the machine's load decide the ratio, not IVRA; it cannot measure the overhead (use --preset realistic)",
}


def format_result(r: dict) -> str:
    lo, hi = r["ratio_ci95"] or (float("nan"), float("nan"))
    note = SMOKE_TESTS.get(r["preset"])
    return "\n".join(
        [
            f"preset {r['preset']} ({r['visual_tokens']} visual tokens, {r['dtype']} on {r['device']}), IVRA layer "
            f"{r['ivra']['layer']} lam {r['ivra']['lam']}, {r['pairs']} interleaved pairs",
            f"  baseline forward   {r['baseline_ms_median']:.1f} ms (median)",
            f"  IVRA forward       {r['ivra_ms_median']:.1f} ms (median)",
            f"  paired ratio       {r['ratio_median']:.4f}  (95% CI {lo:.4f}..{hi:.4f}; IQR {r['ratio_iqr'][0]:.4f}.."
            f"{r['ratio_iqr'][1]:.4f}) -> overhead {100 * (r['ratio_median'] - 1):+.2f} %",
            f"  time in IVRA hooks {r['hook_ms_median']:.2f} ms per forward = {100 * r['hook_fraction_of_forward']:.3f} % "
            "of a baseline forward",
            f"  analytic FLOPs     ratio {r['flops']['ratio']:.5f} (+{100 * (r['flops']['ratio'] - 1):.3f} %)",
            f"  vision passes per forward with IVRA: {r['vision_passes_per_forward']} (must be [1])",
        ]
        + ([f"  note: {note}"] if note else [])
    )


PRESET_HELP = {
    "realistic": "CLIP ViT-B/16 at 224 px + 12-layer 1536-wide Llama, runs on a CPU",
    "llava7b": "LLaVA-7B / LLaRA shape: CLIP ViT-L/14 at 336 px + 32-layer 4096-wide Llama, for a GPU",
    "tiny": "32 px image + 4-layer 64-wide Llama, a smoke test in seconds",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency of baseline vs IVRA (interleaved pairs, paired ratio, FLOPs)",
        description="Times the prefill forward of a random-weight LLaVA-shaped model without and with IVRA, in "
        "interleaved pairs: median paired ratio with a bootstrap 95 % interval, time inside IVRA's hooks, vision "
        "passes per forward (must be 1), analytic FLOP ratio. Exit status 1 when IVRA ran a second vision pass.",
    )
    p.add_argument(
        "--preset",
        default="realistic",
        choices=sorted(PRESETS),
        help="model shape (random weights; default realistic): "
        + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()),
    )
    p.add_argument(
        "--pairs",
        type=positive_int,
        default=10,
        help="interleaved baseline/IVRA pairs timed (default 10; >= 3 for an interval)",
    )
    p.add_argument(
        "--warmup", type=nonneg_int, default=2, help="untimed forwards of each arm first (default 2)"
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="weights and activations dtype (default float32)",
    )
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda or cuda:N (default cuda when available, else cpu)",
    )
    p.add_argument(
        "--layer",
        type=integer,
        default=None,
        help="LM layer IVRA edits (default: the preset's; negative from the end)",
    )
    p.add_argument(
        "--lam", type=unit_float, default=0.3, help="IVRA mixing weight lam in [0, 1] (default 0.3)"
    )
    p.add_argument(
        "--record",
        default=None,
        type=out_file((".json",)),
        help="also write the result as JSON to this path (default: print only)",
    )
    p.set_defaults(func=_main)


def _main(args) -> int:
    n_layers = PRESETS[args.preset]["t_layers"]
    if args.layer is not None and not -n_layers <= args.layer < n_layers:
        raise UsageError(
            f"--layer {args.layer}: preset {args.preset} has {n_layers} LM layers, expected {-n_layers}..{n_layers - 1}"
        )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    try:
        torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device {args.device!r}: expected cpu, cuda or cuda:N") from None
    r = run(args.preset, args.pairs, args.warmup, args.dtype, args.device, args.layer, args.lam)
    print(format_result(r))
    if args.record:
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        Path(args.record).write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {args.record}")
    return 0 if r["vision_passes_per_forward"] == [1] else 1
