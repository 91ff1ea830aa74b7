"""IVRA on FLOWER: the remote-code Florence-2 naming rebuilt over transformers' native Florence-2 modules (and the
native naming itself), FLOWER's two-camera encoder input, the authors' spans for comparison. Core environment
(transformers 5's Florence-2 classes); expectations computed independently (native modules, float64 loop)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from functools import cache

import numpy as np
import pytest
import torch

import ivra
from ivra import IVRAConfig
from ivra.adapters import IVRAError, detect
from ivra.adapters.flower import FlowerAdapter
from ivra.rebuilt.flower import build_tiny

N = 25  # 5 x 5 patches at 40 px (strides 4, 2)
FLOWER = IVRAConfig.preset("flower")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)


@cache
def _model(native=False):
    return build_tiny(native=native)


def get(native=False):
    model = _model(native)
    assert hooks(model) == 0
    return model


def hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def obs(batch=2, seed=0, text=6):
    g = torch.Generator().manual_seed(seed)
    static = torch.randn(batch, 3, 40, 40, generator=g)
    gripper = torch.randn(batch, 3, 40, 40, generator=g)
    ids = torch.randint(3, 100, (batch, text), generator=g)
    return static, gripper, ids, torch.ones_like(ids)


def channel_keys(model, pixels):
    """Keys of the last stage's last block's channel attention, from the native modules directly."""
    native = model.vlm if not hasattr(model.vlm, "_encode_image") else None
    tower = native.model.vision_tower if native is not None else model.vlm.vision_tower
    x = pixels
    convs = tower.convs
    for s, (conv, stage) in enumerate(zip(convs, tower.blocks)):
        x = conv(x)
        blocks = list(stage)
        for i, blk in enumerate(blocks):
            if s == len(convs) - 1 and i == len(blocks) - 1:
                if native is not None:
                    spatial, channel = blk.spatial_block, blk.channel_block
                    norm, attn = channel.norm1, channel.channel_attn
                else:
                    spatial, channel = blk[0], blk[1]
                    norm, attn = channel.channel_attn.norm, channel.channel_attn.fn
                x = spatial(x)
                x = channel.conv1(x) + x
                qkv = attn.qkv(norm(x.flatten(2).transpose(1, 2)))
                d = qkv.shape[-1] // 3
                return qkv[..., d : 2 * d]
            x = blk(x)
    raise AssertionError


def naive_pool(tokens, keys, lam):
    k = keys.double()
    k = k / k.norm(dim=-1, keepdim=True)
    A = k @ k.T
    v = tokens.double()
    out = torch.empty_like(v)
    for i in range(A.shape[0]):
        row = A[i]
        if float(row.sum()) < 1.0:
            row = row.clamp(min=0)
        out[i] = (1 - lam) * v[i] + lam * (row[:, None] * v).sum(0) / row.sum()
    return out


def encoder_output(model, o, config=None, adapter=None):
    if config is None:
        return model.encode_observations(*o)
    with ivra.attach(model, config, adapter=adapter) as h:
        out = model.encode_observations(*o)
    return out, h


def test_remote_naming_computes_what_native_computes():
    remote, native = get(), get(native=True)
    assert hasattr(remote.vlm.vision_tower.blocks[-1][0][1].channel_attn.fn, "qkv")
    assert remote.vlm.vision_tower.blocks[-1][0][1].channel_attn.fn.qkv is (
        native.vlm.model.vision_tower.blocks[-1][0].channel_block.channel_attn.qkv
    ) or torch.equal(
        remote.vlm.vision_tower.blocks[-1][0][1].channel_attn.fn.qkv.weight,
        native.vlm.model.vision_tower.blocks[-1][0].channel_block.channel_attn.qkv.weight,
    )
    o = obs()
    assert torch.equal(
        remote.vlm._encode_image(o[0]), native.vlm.model.get_image_features(o[0]).pooler_output
    )
    assert isinstance(remote.vlm.language_model.model.encoder.layers[0](torch.randn(1, 3, 64)), tuple)
    assert torch.allclose(encoder_output(remote, o), encoder_output(native, o), atol=1e-6)


@pytest.mark.parametrize("native", [False, True])
def test_each_camera_its_own_block_global_token_alone(native):
    """Preset 'flower' (post last encoder layer, lam 0.2): the encoder output changes exactly on each camera's
    patches, each pooled with its own keys; global tokens, <Flow> and text untouched."""
    model = get(native)
    assert detect(model).name == "flower"
    o = obs(seed=1)
    base = encoder_output(model, o)
    got, h = encoder_output(model, o, FLOWER)
    assert h.stats.calls == 1 and h.stats.images == 2 * 2 and h.stats.tokens == 2 * 2 * N
    assert h.stats.vision_captures == 2  # FLOWER's own two DaViT passes (one per camera), none added
    changed = (got != base).any(-1)
    expect = torch.zeros_like(changed)
    expect[:, 1 : 1 + N] = True
    expect[:, 2 + N : 2 + 2 * N] = True
    assert torch.equal(changed, expect)
    for b in range(2):
        for cam, start in ((0, 1), (1, 2 + N)):
            keys = channel_keys(model, o[cam][b : b + 1])[0]
            ref = naive_pool(base[b, start : start + N], keys, 0.2)
            assert torch.allclose(got[b, start : start + N].double(), ref, atol=1e-5, rtol=1e-4)


def test_authors_spans_reproduce_the_released_off_by_one():
    model = get()
    o = obs(seed=2)
    base = encoder_output(model, o)
    got, h = encoder_output(model, o, FLOWER, adapter=FlowerAdapter(authors_spans=True))
    changed = (got != base).any(-1)
    expect = torch.zeros_like(changed)
    expect[:, 0 : 2 * N] = True  # static keys on [0, N) incl. its global token; gripper keys on [N, 2N)
    assert torch.equal(changed, expect)
    keys_static = channel_keys(model, o[0][:1])[0]
    keys_grip = channel_keys(model, o[1][:1])[0]
    assert torch.allclose(
        got[0, :N].double(), naive_pool(base[0, :N], keys_static, 0.2), atol=1e-5, rtol=1e-4
    )
    assert torch.allclose(
        got[0, N : 2 * N].double(), naive_pool(base[0, N : 2 * N], keys_grip, 0.2), atol=1e-5, rtol=1e-4
    )
    ours, _ = encoder_output(model, o, FLOWER)
    assert not torch.allclose(ours, got, atol=1e-4)


def test_one_vision_pass_per_camera_per_step():
    model = get()
    calls = []
    hd = model.vlm.vision_tower.convs[0].register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        g = torch.Generator().manual_seed(3)
        noise = torch.randn(2, 10, 7, generator=g)
        model(*obs(seed=3), noise)
        baseline = len(calls)
        with ivra.attach(model, FLOWER) as h:
            for _ in range(3):
                actions = model(*obs(seed=3), noise)
    finally:
        hd.remove()
    assert baseline == 2 and len(calls) == 2 + 3 * 2 and h.stats.calls == 3
    assert actions.shape == (2, 10, 7)


@pytest.mark.parametrize("native", [False, True])
def test_lam_zero_bit_identical_batch_consistent_and_detach(native):
    model = get(native)
    o = obs(batch=3, seed=4)
    base = encoder_output(model, o)
    zero, _ = encoder_output(model, o, FLOWER.replace(lam=0.0))
    assert torch.equal(zero, base)
    n = hooks(model)
    with ivra.attach(model, FLOWER.replace(lam=0.5)):
        batch = model.encode_observations(*o)
        alone = [model.encode_observations(*(x[b : b + 1] for x in o)) for b in range(3)]
    for b in range(3):
        assert torch.allclose(batch[b], alone[b][0], atol=1e-5)
    assert not torch.allclose(batch, base, atol=1e-4)
    assert hooks(model) == n == 0
    assert torch.equal(encoder_output(model, o), base)


def test_pre_position_and_errors():
    model = get()
    o = obs(seed=5)
    base = encoder_output(model, o)
    got, h = encoder_output(model, o, IVRAConfig(layer=6, lam=0.3))
    assert h.stats.tokens == 2 * 2 * N and not torch.equal(got, base)
    with ivra.attach(model, FLOWER) as h, pytest.raises(IVRAError, match="no visual tokens"):
        model.vlm.get_encoder()(inputs_embeds=torch.randn(1, 5, 64), attention_mask=torch.ones(1, 5))
    assert not h.attached


def test_preset_and_cli_spec():
    assert IVRAConfig.parse("preset=flower") == FLOWER
    assert FLOWER.layer == -1 and FLOWER.position == "post" and FLOWER.lam == 0.2
    assert IVRAConfig.parse("preset=llara,lam=0.1") == IVRAConfig(layer=20, lam=0.1)
    assert IVRAConfig.preset("openvla") == IVRAConfig(layer=20, lam=0.3)
    with pytest.raises(ValueError, match="unknown IVRA preset 'vima'"):
        IVRAConfig.parse("preset=vima")


# -- the LIBERO policy wrapper ------------------------------------------------------------------------------------------
def test_policy_chunks_seeded_noise_and_ivra():
    from ivra.policies.flower import FlowerPolicy

    with pytest.raises(ValueError, match="needs a model: model=tiny for the RANDOM-weight rebuild"):
        FlowerPolicy()  # no silent random weights
    policy = FlowerPolicy(model="tiny", chunk=4, multistep=2)
    assert "random weights" in policy.random_weights
    rng = np.random.default_rng(0)
    obs = [{"image": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), "wrist_image": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)}]  # fmt: skip

    def episode(seed):
        policy.reset(seed)
        return np.concatenate([policy.act(obs, ["open the drawer"]) for _ in range(4)])

    a, b = episode(3), episode(3)
    assert a.shape == (4, 7) and np.array_equal(a, b) and np.all(np.abs(a) <= 1)
    assert not np.array_equal(episode(4), a)
    policy.set_ivra({"layer": -1, "position": "post", "lam": 0.0})
    assert np.array_equal(episode(3), a)  # lam 0: same actions
    assert policy.ivra_counters()["calls"] == 2  # one encoder pass per chunk (2 chunks of 2 steps)
    assert policy.ivra_counters()["tokens"] == 2 * 2 * 196  # 112 px: 14 x 14 patches per camera
    policy.set_ivra({"layer": -1, "position": "post", "lam": 0.9})
    assert not np.allclose(episode(3), a)
    policy.set_ivra(None)
    with pytest.raises(ValueError, match="one episode at a time"):
        policy.act(obs * 2, ["a", "b"])


def _libero_missing():
    missing = [m for m in ("libero", "robosuite", "mujoco") if importlib.util.find_spec(m) is None]
    return f"LIBERO not installed (missing {missing}); bash scripts/setup_libero.sh" if missing else None


@pytest.mark.libero
@pytest.mark.slow
@pytest.mark.skipif(_libero_missing() is not None, reason=str(_libero_missing()))
def test_libero_ab_episode_with_tiny_weights(tmp_path):
    from ivra.eval.journal import Journal
    from ivra.eval.libero.install import child_env

    out = tmp_path / "flower"
    cmd = [sys.executable, "-m", "ivra.cli", "eval", "libero", "--suite", "libero_spatial", "--tasks", "0",
           "--init-states", "0", "--max-steps", "12", "--resolution", "128", "--no-progress",
           "--policy", "ivra.policies.flower:FlowerPolicy", "--policy-kwargs", "model=tiny", "--ab", "--ivra", "preset=flower",
           "--executor", "inline", "--out", str(out)]  # fmt: skip
    env = child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "runs RANDOM WEIGHTS (model=tiny" in proc.stderr
    assert "random weights" in json.loads((out / "manifest.json").read_text())["random_weights"]
    assert "RANDOM WEIGHTS" in (out / "report.md").read_text()
    recs = {r["unit"]["arm"]: r for r in Journal(out / "journal.jsonl").final_records().values()}
    assert set(recs) == {"baseline", "ivra"}
    for r in recs.values():
        assert r["status"] == "ok", r.get("traceback")
        assert r["result"]["steps"] == 12 or r["result"]["success"]
    assert (
        recs["ivra"]["result"]["ivra"]["lam"] == 0.2 and recs["ivra"]["result"]["ivra"]["position"] == "post"
    )
    stats = recs["ivra"]["result"]["ivra_stats"]
    chunks = -(-recs["ivra"]["result"]["steps"] // 10)
    assert stats["calls"] == chunks and stats["tokens"] == chunks * 2 * 196
