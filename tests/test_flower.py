"""IVRA on FLOWER: our rebuild of FLOWERVLA and its remote-code Florence-2 (held to the facts recorded from the real
code, tests/fixtures/real/flower.json), the flower adapter on that layout (and on transformers' native Florence-2),
the florence2 adapter on the bare remote Florence-2, and the LIBERO wrapper driving FLOWERVLA's own API.
Expectations computed independently (the modules run by hand, a float64 loop)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

import ivra
from ivra import IVRAConfig
from ivra.adapters import IVRAError, detect
from ivra.adapters.flower import FlowerAdapter
from ivra.episodes import EpisodeRunner, chunk_seed
from ivra.rebuilt.flower import build_tiny, probe_pixels

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = json.loads((ROOT / "tests/fixtures/real/flower.json").read_text())
N = 16  # 4 x 4 patches per camera at 112 px (Florence-2's strides 4, 2, 2, 2)
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


def recorder():
    spec = importlib.util.spec_from_file_location(
        "record_fixture_flower", ROOT / "scripts/record_fixture_flower.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def batch(b=2, seed=0, texts=None):
    """FLOWER's encode_observations batch: two cameras (B, T=1, 3, 112, 112) and instructions."""
    g = torch.Generator().manual_seed(seed)
    static = torch.randn(b, 1, 3, 112, 112, generator=g)
    gripper = torch.randn(b, 1, 3, 112, 112, generator=g)
    texts = texts or ["pick up the bowl", "open the top drawer"][:b] + ["x"] * max(0, b - 2)
    return {"rgb_obs": {"rgb_static": static, "rgb_gripper": gripper}, "lang_text": texts}


def sub(bt, rows):
    return {
        "rgb_obs": {k: v[rows] for k, v in bt["rgb_obs"].items()},
        "lang_text": bt["lang_text"][rows],
    }


def features(model, bt, config=None, adapter=None):
    if config is None:
        return model.encode_observations(bt)["features"]
    with ivra.attach(model, config, adapter=adapter) as h:
        out = model.encode_observations(bt)["features"]
    return out, h


def channel_keys(model, pixels):
    """Keys of the last stage's last block's channel attention, running the tower's modules by hand."""
    if hasattr(model.vlm, "_encode_image"):  # remote layout: tokens + size through every module
        tower, x, size = model.vlm.vision_tower, pixels, tuple(pixels.shape[-2:])
        for s, (conv, stage) in enumerate(zip(tower.convs, tower.blocks)):
            x, size = conv(x, size)
            for i, blk in enumerate(stage):
                if s == len(tower.convs) - 1 and i == len(stage) - 1:
                    x, size = blk.spatial_block(x, size)
                    x, size = blk.channel_block.conv1(x, size)
                    attn = blk.channel_block.channel_attn
                    qkv = attn.fn.qkv(attn.norm(x))
                    return qkv[..., qkv.shape[-1] // 3 : 2 * qkv.shape[-1] // 3]
                x, size = blk(x, size)
    tower, x = model.vlm.model.vision_tower, pixels  # native layout: (B, C, H, W) maps
    for s, (conv, stage) in enumerate(zip(tower.convs, tower.blocks)):
        x = conv(x)
        for i, blk in enumerate(stage):
            if s == len(tower.convs) - 1 and i == len(stage) - 1:
                x = blk.spatial_block(x)
                x = blk.channel_block.conv1(x) + x
                qkv = blk.channel_block.channel_attn.qkv(
                    blk.channel_block.norm1(x.flatten(2).transpose(1, 2))
                )
                return qkv[..., qkv.shape[-1] // 3 : 2 * qkv.shape[-1] // 3]
            x = blk(x)
    raise AssertionError


def naive_pool(tokens, keys, lam, authors=False):
    k = keys.double()
    k = k / k.norm(dim=-1, keepdim=True)
    A = k @ k.T
    v = tokens.double()
    out = torch.empty_like(v)
    for i in range(A.shape[0]):
        row = A[i]
        if authors:
            out[i] = (1 - lam) * v[i] + lam * (row[:, None] * v).sum(0) / row.sum().clamp(min=1e-6)
            continue
        if float(row.sum()) < 1.0:
            row = row.clamp(min=0)
        out[i] = (1 - lam) * v[i] + lam * (row[:, None] * v).sum(0) / row.sum()
    return out


# -- the rebuild is held to the facts recorded from the real code ------------------------------------------------------
def compare(expected, got, path="", rtol=1e-4):
    """Differences between a recorded fixture section and a measurement (floats to ``rtol``)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = [
            f"{path}/{k}: only in {'fixture' if k in expected else 'rebuild'}"
            for k in set(expected) ^ set(got)
        ]
        for k in sorted(set(expected) & set(got)):
            out += compare(expected[k], got[k], f"{path}/{k}", rtol)
        return out
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [f"{path}: {len(expected)} items recorded, {len(got)} rebuilt"]
        return [d for i, (a, b) in enumerate(zip(expected, got)) for d in compare(a, b, f"{path}[{i}]", rtol)]
    if isinstance(expected, float) and isinstance(got, float):
        ok = abs(expected - got) <= rtol * max(1.0, abs(expected))
        return [] if ok else [f"{path}: recorded {expected}, rebuilt {got}"]
    return [] if expected == got else [f"{path}: recorded {expected!r}, rebuilt {got!r}"]


@pytest.fixture(scope="module")
def measured():
    return recorder().measure(
        build_tiny(seed=3)
    )  # measure_numerics overwrites the weights: a model of its own


@pytest.mark.parametrize(
    "section",
    ["tree", "parameters", "signatures", "tokenizer", "token_order", "global_token", "chunking", "numerics"],
)
def test_rebuild_matches_the_real_code(measured, section):
    """Module tree under ``vlm`` (path -> class), every parameter and buffer shape, the signatures, the tokenizer
    ids, the encoder's token order, the chunking, and the numbers on name-filled weights: as recorded on FLOWER's
    FLOWERVLA with the remote Florence-2 code (transformers 4.51.3)."""
    assert compare(FIXTURE[section], measured[section], section) == []


def test_the_fixture_check_catches_a_drift(measured):
    drifted = json.loads(json.dumps(measured))
    path = "vlm.vision_tower.blocks.-1.-1.channel_block.channel_attn"
    drifted["tree"]["hooked"][path] = (
        "ChannelAttention"  # e.g. the old rebuild: no PreNorm around the attention
    )
    drifted["parameters"].pop("vision_tower.blocks.3.0.channel_block.channel_attn.fn.qkv.weight")
    drifted["numerics"]["encoder"]["sum"] += 0.5
    drifted["signatures"]["FLOWERVLA.forward"] = ["static", "gripper", "text_ids", "text_mask", "noise"]
    for section in ("tree", "parameters", "numerics", "signatures"):
        assert compare(FIXTURE[section], drifted[section], section), section


def test_the_fixture_names_its_sources():
    src = FIXTURE["sources"]
    assert src["flower"]["repo"] == "intuitive-robots/flower_vla_calvin"
    assert src["florence2"]["repo"] == "microsoft/Florence-2-large"
    for part in src.values():
        assert re.fullmatch(r"[0-9a-f]{40}", part["commit"])
    facts = [k for k in FIXTURE if k not in ("about", "sources", "environment", "where")]
    assert set(facts) == set(FIXTURE["where"])
    for section, places in FIXTURE["where"].items():
        for place in places:
            assert re.match(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}:\S+\.(py|yaml|txt)", place), (section, place)
    assert FIXTURE["environment"]["transformers"] == "4.51.3"


# -- the flower adapter --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("native", [False, True])
def test_each_camera_its_own_block_global_token_alone(native):
    """Preset 'flower' (post last encoder layer, lam 0.2) on the real layout (MySequential blocks with named
    children, channel_attn a PreNorm whose .fn holds qkv): the encoder output changes exactly on each camera's
    patches, each pooled with its own keys; global tokens, <Flow> and text untouched."""
    model = get(native)
    assert detect(model).name == "flower"
    bt = batch(seed=1)
    base = features(model, bt)
    got, h = features(model, bt, FLOWER)
    assert h.stats.calls == 1 and h.stats.images == 2 * 2 and h.stats.tokens == 2 * 2 * N
    assert h.stats.vision_captures == 2  # FLOWER's own two DaViT passes (one per camera), none added
    changed = (got != base).any(-1)
    expect = torch.zeros_like(changed)
    expect[:, 1 : 1 + N] = True
    expect[:, 2 + N : 2 + 2 * N] = True
    assert torch.equal(changed, expect)
    for b in range(2):
        for cam, start in (("rgb_static", 1), ("rgb_gripper", 2 + N)):
            keys = channel_keys(model, bt["rgb_obs"][cam][b])[0]
            ref = naive_pool(base[b, start : start + N], keys, 0.2)
            assert torch.allclose(got[b, start : start + N].double(), ref, atol=1e-5, rtol=1e-4)


def test_authors_spans_and_their_row_rule():
    """authors_spans=True: the released off-by-one spans; with affinity_mode="cosine_authors" also their row rule
    (division by clamp(row sum, 1e-6), no fallback)."""
    model = get()
    bt = batch(seed=2)
    base = features(model, bt)
    keys = [channel_keys(model, bt["rgb_obs"][cam][0])[0] for cam in ("rgb_static", "rgb_gripper")]
    for mode in ("cosine", "cosine_authors"):
        got, _ = features(model, bt, FLOWER.replace(affinity_mode=mode), FlowerAdapter(authors_spans=True))
        changed = (got != base).any(-1)
        expect = torch.zeros_like(changed)
        expect[:, 0 : 2 * N] = True  # static keys on [0, N) incl. its global token; gripper keys on [N, 2N)
        assert torch.equal(changed, expect)
        authors = mode == "cosine_authors"
        for c in range(2):
            ref = naive_pool(base[0, c * N : (c + 1) * N], keys[c], 0.2, authors=authors)
            assert torch.allclose(got[0, c * N : (c + 1) * N].double(), ref, atol=1e-4, rtol=1e-4), mode
    ours, _ = features(model, bt, FLOWER)
    assert not torch.allclose(ours, got, atol=1e-4)


def test_one_vision_pass_per_camera_per_step():
    model = get()
    calls = []
    hd = model.vlm.vision_tower.convs[0].register_forward_pre_hook(lambda m, a: calls.append(1))
    obs = {"rgb_obs": {k: v[:1] for k, v in batch(seed=3)["rgb_obs"].items()}}
    try:
        model.reset()
        model(obs, {"lang_text": "open the drawer"})
        baseline = len(calls)
        with ivra.attach(model, FLOWER) as h:
            model.reset()
            for _ in range(3):
                actions = model(obs, {"lang_text": "open the drawer"})
    finally:
        hd.remove()
    assert baseline == 2 and len(calls) == 2 + 3 * 2 and h.stats.calls == 3
    assert actions.shape == (1, 10, 7)


@pytest.mark.parametrize("native", [False, True])
def test_lam_zero_bit_identical_batch_consistent_and_detach(native):
    model = get(native)
    bt = batch(
        b=3, seed=4, texts=["pick up the bowl"] * 3
    )  # equal prompts: FLOWER attends to its text padding
    base = features(model, bt)
    zero, _ = features(model, bt, FLOWER.replace(lam=0.0))
    assert torch.equal(zero, base)
    with ivra.attach(model, FLOWER.replace(lam=0.5)):
        together = model.encode_observations(bt)["features"]
        alone = [model.encode_observations(sub(bt, slice(b, b + 1)))["features"] for b in range(3)]
    for b in range(3):
        assert torch.allclose(together[b], alone[b][0], atol=1e-5)
    assert not torch.allclose(together, base, atol=1e-4)
    assert hooks(model) == 0
    assert torch.equal(features(model, bt), base)


def test_pre_position_and_errors():
    model = get()
    bt = batch(seed=5)
    base = features(model, bt)
    got, h = features(model, bt, IVRAConfig(layer=6, lam=0.3))
    assert h.stats.tokens == 2 * 2 * N and not torch.equal(got, base)
    with ivra.attach(model, FLOWER) as h, pytest.raises(IVRAError, match="no visual tokens"):
        model.vlm.get_encoder()(inputs_embeds=torch.randn(1, 5, 32), attention_mask=torch.ones(1, 5))
    assert not h.attached


# -- the florence2 adapter on the bare remote Florence-2 -----------------------------------------------------------------
def window_keys(vlm, pixels):
    """Keys of the last block's window attention in raster order: qkv of the normalised tokens (by hand)."""
    tower, x, size = vlm.vision_tower, pixels, tuple(pixels.shape[-2:])
    for s, (conv, stage) in enumerate(zip(tower.convs, tower.blocks)):
        x, size = conv(x, size)
        for i, blk in enumerate(stage):
            if s == len(tower.convs) - 1 and i == len(stage) - 1:
                x, size = blk.spatial_block.conv1(x, size)
                attn = blk.spatial_block.window_attn
                qkv = attn.fn.qkv(attn.norm(x))
                return qkv[..., qkv.shape[-1] // 3 : 2 * qkv.shape[-1] // 3]
            x, size = blk(x, size)
    raise AssertionError


def test_bare_remote_florence2_is_detected_and_edited():
    """The remote Florence-2 on its own: adapter 'florence2' (remote paths: language_model.model.encoder.layers,
    window_attn.fn.qkv reading (B, H*W, C) + size); no placeholder ids, the image first as the remote forward puts
    it ([image (1 + N), prompt]); one pass = one encoder call."""
    vlm = get().vlm
    assert detect(vlm).name == "florence2"
    px = probe_pixels(2, phase=0.3)
    text = vlm.get_input_embeddings()(torch.tensor([[0, 70, 71, 72, 2], [0, 80, 81, 2, 1]]))

    def encode():
        merged = torch.cat([vlm._encode_image(px), text], dim=1)
        return vlm.get_encoder()(inputs_embeds=merged, attention_mask=torch.ones(merged.shape[:2]))[0]

    base = encode()
    for feature in ("key", "hidden"):
        with ivra.attach(vlm, IVRAConfig(layer=-1, position="post", lam=0.3, affinity_feature=feature)) as h:
            got = encode()
        assert h.adapter.name == "florence2" and h.stats.tokens == 2 * N and h.stats.calls == 1
        changed = (got != base).any(-1)
        expect = torch.zeros_like(changed)
        expect[:, 1 : 1 + N] = True  # the global token (position 0) and the prompt untouched
        assert torch.equal(changed, expect), feature
    with ivra.attach(vlm, IVRAConfig(layer=-1, position="post", lam=0.3)):
        got = encode()
    keys = window_keys(vlm, px)
    for b in range(2):
        ref = naive_pool(base[b, 1 : 1 + N], keys[b], 0.3)
        assert torch.allclose(got[b, 1 : 1 + N].double(), ref, atol=1e-5, rtol=1e-4)
    with ivra.attach(vlm, IVRAConfig(layer=3, lam=0.0)):
        assert torch.equal(encode(), base)
    with ivra.attach(vlm, IVRAConfig(layer=3, lam=0.3)), pytest.raises(IVRAError, match="one image first"):
        merged = torch.cat([vlm._encode_image(px[:1]), vlm._encode_image(px[1:]), text[:1]], dim=1)
        vlm.get_encoder()(inputs_embeds=merged, attention_mask=torch.ones(merged.shape[:2]))


def test_preset_and_cli_spec():
    assert IVRAConfig.parse("preset=flower") == FLOWER
    assert FLOWER.layer == -1 and FLOWER.position == "post" and FLOWER.lam == 0.2
    assert IVRAConfig.parse("preset=llara,lam=0.1") == IVRAConfig(layer=20, lam=0.1)
    assert IVRAConfig.preset("openvla") == IVRAConfig(layer=20, lam=0.3)
    with pytest.raises(ValueError, match="unknown IVRA preset 'vima'"):
        IVRAConfig.parse("preset=vima")


# -- the LIBERO policy wrapper ------------------------------------------------------------------------------------------
def frames(seed=0, size=128):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return [{"image": img, "wrist_image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)}]


def test_policy_follows_flowers_rollout_facts():
    """The observation dict, cameras, image transforms and goal of FLOWER's LIBERO rollout, as recorded."""
    from ivra.policies import flower as fp

    cfg = FIXTURE["configs"]["val_transforms"]
    for cam in ("rgb_static", "rgb_gripper"):
        resize, scale, norm = cfg[cam]
        assert resize["size"] == fp.IMAGE_SIZE and resize["antialias"] is True
        assert scale["target"].endswith("ScaleImageTensor")
        assert tuple(norm["mean"]) == fp.CLIP_MEAN and tuple(norm["std"]) == fp.CLIP_STD
    mapping = FIXTURE["rollout"]["obs_mapping"]
    assert {k: ["rgb_obs", v] for k, v in fp.CAMERAS.items()} == {k: mapping[k] for k in fp.CAMERAS}
    policy = fp.FlowerPolicy(model="tiny")
    seen = []  # FLOWER's chunk API, model(obs, goal) = FLOWERVLA.forward, as FLOWERVLA.step calls it
    hook = policy.model.register_forward_pre_hook(lambda m, args: seen.append(args))
    try:
        policy.predict(frames(1), ["open the drawer"], [1])
    finally:
        hook.remove()
    obs, goal = seen[0]
    assert set(obs) == {"rgb_obs"} and set(obs["rgb_obs"]) == {"rgb_static", "rgb_gripper"}
    assert tuple(obs["rgb_obs"]["rgb_static"].shape) == (1, 1, 3, 112, 112)
    assert goal["lang_text"] == "open the drawer"
    flat = np.full(
        (1, 128, 128, 3), 128, np.uint8
    )  # a flat image: resize keeps 128; then /255 and CLIP's norm
    x = policy.pixels(flat[0])
    for c in range(3):
        assert torch.allclose(
            x[0, 0, c], torch.tensor((128 / 255 - fp.CLIP_MEAN[c]) / fp.CLIP_STD[c]), atol=1e-6
        )
    upright = np.zeros((128, 128, 3), np.uint8)
    upright[:64] = (
        255  # top half white as the harness shows it; LIBERO's own frame (what FLOWER sees) is flipped
    )
    y = policy.pixels(upright)[0, 0, 0]
    assert y[-1].mean() > y[0].mean()


def episode(policy, seed, cfg=None, steps=4, arms=True, execute=None):
    """One episode through the runner, a new frame each step."""
    runner = EpisodeRunner(policy, execute=execute, arms=arms)
    ep = runner.start(seed, ivra=cfg)
    return np.stack([runner.step([ep], frames(t), ["open the drawer"])[0] for t in range(steps)])


def test_policy_predicts_flowers_chunks_with_paired_noise_and_ivra():
    from ivra.policies.flower import FlowerPolicy

    with pytest.raises(ValueError, match="needs a model: model=tiny for the RANDOM-weight rebuild"):
        FlowerPolicy()  # no silent random weights
    policy = FlowerPolicy(model="tiny", multistep=2)
    assert "random weights" in policy.random_weights
    assert (policy.chunk_length, policy.execute_steps) == (policy.model.act_window_size, 2) == (10, 2)
    assert not hasattr(policy, "reset") and not hasattr(policy, "act")  # no episode state in the policy
    forwards = []
    hd = policy.model.register_forward_pre_hook(lambda m, a: forwards.append(1))
    try:
        state = torch.get_rng_state()
        a, b = episode(policy, 3), episode(policy, 3)
        assert torch.equal(torch.get_rng_state(), state)  # the process's own random stream is left alone
        assert len(forwards) == 4  # one chunk per multistep (2) steps, twice
        torch.manual_seed(123)  # whatever the global state, the episode seed decides the noise
        assert np.array_equal(episode(policy, 3), a)
    finally:
        hd.remove()
    assert a.shape == (4, 7) and np.array_equal(a, b) and np.all(np.abs(a) <= 1)
    assert not np.array_equal(episode(policy, 4), a)
    chunk = policy.predict(frames(0), ["open the drawer"], [9])
    assert chunk.shape == (1, 10, 7) and not np.array_equal(chunk[0, 0], chunk[0, 1])  # successive actions
    # a batch of rows == the rows alone (FLOWER's forward takes one goal text: the rows run one at a time)
    two = frames(0) + frames(1)
    both = policy.predict(two, ["open the drawer", "close the drawer"], [9, 10])
    assert np.array_equal(both[:1], chunk)
    assert np.array_equal(both[1:], policy.predict(two[1:], ["close the drawer"], [10]))
    assert np.array_equal(episode(policy, 3, {"layer": -1, "position": "post", "lam": 0.0}), a)  # lam 0: same
    arm = {"layer": -1, "position": "post", "lam": 0.9}
    edited = episode(policy, 3, arm)
    assert not np.allclose(edited, a)
    mixed = policy.predict(two, ["open the drawer", "close the drawer"], [9, 10], ivra=[None, arm])
    assert np.array_equal(mixed[:1], chunk)  # one arm per row; the baseline row untouched
    assert np.array_equal(mixed[1:], policy.predict(two[1:], ["close the drawer"], [10], ivra=[arm]))
    assert not np.allclose(mixed[1:], both[1:])
    policy.set_ivra(
        {"layer": -1, "position": "post", "lam": 0.0}
    )  # the arm set on the policy (the LIBERO job)
    assert np.array_equal(episode(policy, 3, arms=False), a)
    assert policy.ivra_counters()["calls"] == 2  # one encoder pass per chunk (2 chunks of 2 steps)
    assert policy.ivra_counters()["tokens"] == 2 * 2 * N  # 112 px: 4 x 4 patches per camera
    policy.set_ivra(arm)
    assert np.array_equal(episode(policy, 3, arms=False), edited)
    policy.set_ivra(None)
    with pytest.raises(ValueError, match="2 instructions for a batch of 1 observations"):
        policy.predict(frames(0), ["a", "b"])
    with pytest.raises(ValueError, match="no \\*.ckpt"):
        FlowerPolicy(model=str(ROOT / "docs"))


def test_runner_gives_flowervla_steps_own_actions():
    runner_against_step()


def runner_against_step(model=None):
    """EpisodeRunner(FlowerPolicy, execute=multistep) executes exactly what FLOWERVLA.step's own loop returns
    (model.reset(), then step() every environment step, a new frame each step) when the noise of each of step's
    forwards is seeded as the runner seeds chunk k: chunk_seed(episode seed, k). ``model``: a FLOWERVLA to drive
    (default: the tiny rebuild; FLOWER's real class where it is installed)."""
    from ivra.policies.flower import FlowerPolicy

    policy = FlowerPolicy(model="tiny" if model is None else model, multistep=3)
    flower, seed, steps, text = policy.model, 5, 8, "open the drawer"
    ours = episode(policy, seed, steps=steps, execute=policy.execute_steps)
    flower.reset()
    theirs = []
    for t in range(steps):
        k, fresh = divmod(t, flower.multistep)
        with torch.random.fork_rng(devices=[]):
            if fresh == 0:  # step() calls forward now
                torch.manual_seed(chunk_seed(seed, k))
            action = flower.step(policy.observation(frames(t)[0]), {"lang_text": text, "lang": None})
        theirs.append(action.float().cpu().numpy().reshape(-1))
    assert np.array_equal(ours, np.asarray(theirs, dtype=np.float64))
    # the boundary matters: executing the whole window gives other actions from step multistep on
    whole = episode(policy, seed, steps=steps, execute=policy.chunk_length)
    assert np.array_equal(whole[:3], ours[:3]) and not np.allclose(whole[3:], ours[3:])


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
    assert stats["calls"] == chunks and stats["tokens"] == chunks * 2 * N
