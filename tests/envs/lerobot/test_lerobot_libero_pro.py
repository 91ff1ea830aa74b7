"""A LIBERO-PRO perturbed suite in the lerobot environment: a real ``libero_spatial_swap`` episode of a tiny SmolVLA
checkpoint through ivra's LIBERO job, next to the same task / initial state / seed of the suite it perturbs."""

from __future__ import annotations

import pytest

pytest.importorskip("libero", reason="LIBERO is installed into this environment by `nox -s lerobot`")

import ivra.tiny.lerobot as tl  # noqa: E402
from ivra.eval.libero import protocol  # noqa: E402
from ivra.eval.libero.job import LiberoConfig, LiberoJob, make_units  # noqa: E402
from ivra.policies.lerobot import LerobotPolicy  # noqa: E402

STEPS = 4


def episode(checkpoint, suite: str):
    """One 4-step episode (task 0, init state 0, lerobot's preset seed) -> (result, the first policy batch)."""
    policy = LerobotPolicy("smolvla", path=str(checkpoint))
    pre, seen = policy.preprocessor, []
    policy.preprocessor = lambda raw: seen.append({k: v for k, v in raw.items()}) or pre(raw)
    cfg = LiberoConfig(suite=suite, policy="lerobot:smolvla", max_steps=STEPS, resolution=128)
    job = LiberoJob(cfg, policy=policy)
    job.setup()
    (unit,) = make_units(suite, [0], [0], ["baseline"], seed=protocol.preset("lerobot").seed)
    try:
        result = job.run(unit)
    finally:
        job.teardown()
    return result, seen[0]


def test_libero_spatial_swap_episode_with_tiny_smolvla(tmp_path):
    checkpoint = tl.save_checkpoint(tmp_path / "smolvla", chunk=STEPS)
    swap, swap_batch = episode(checkpoint, "libero_spatial_swap")
    base, base_batch = episode(checkpoint, protocol.base_suite("libero_spatial_swap"))
    assert (swap["suite"], swap["steps"], swap["chunks"], swap["seed"]) == (
        "libero_spatial_swap",
        STEPS,
        1,
        1000,
    )
    assert swap["task"] == base["task"] == swap_batch["task"][0]  # swap keeps the instruction
    assert protocol.perturbation(swap["suite"]) == "swap"
    # the perturbation is in the scene: the third-person view differs from the base suite's at the same state
    a, b = swap_batch["observation.images.image"], base_batch["observation.images.image"]
    assert a.shape == b.shape == (1, 3, 128, 128)
    assert float((a - b).abs().mean()) > 1e-3
    assert swap["actions_sha1"] != base["actions_sha1"]
