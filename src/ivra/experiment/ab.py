"""Paired baseline-vs-IVRA evaluation of the shipped tiny policy on the tabletop, as executor work units.

A unit is one chunk of episodes of one split under one arm: ``{"key", "split", "seeds", "arm", "ivra"}`` with
``ivra`` None for the baseline or an :class:`ivra.IVRAConfig` dict. Both arms get the same chunks, so the
comparison is paired episode by episode.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ivra.eval.stats import paired_ab, wilson
from ivra.tabletop.tasks import EXTRA_SPLITS, SPLITS, TASKS, TEST_SPLITS, TUNING_SPLITS  # noqa: F401 (re-exported)

SHIPPED_SETTING_FILE = Path(__file__).resolve().parent.parent / "minivla" / "weights" / "ivra_setting.json"
SETTING_FILE_NAME = "ivra/minivla/weights/ivra_setting.json"  # how messages name it (no install paths)


def setting_file() -> Path:
    """Where `ivra sweep --write-default` records, and `ivra demo` reads, the default IVRA setting:
    ``$IVRA_SETTING_FILE`` when set, else the file shipped inside the package."""
    override = os.environ.get("IVRA_SETTING_FILE")
    return Path(override) if override else SHIPPED_SETTING_FILE


PAPER_DEFAULT = {"layer": 2, "lam": 0.3}  # 20 of 32 layers ~ 2 of 4 for the tiny policy (2.5), lam 0.3


def default_setting() -> tuple[dict, str]:
    """The IVRA setting the demo uses: the validation-sweep winner when one was recorded, else the paper's."""
    path = setting_file()
    if path.exists():
        data = json.loads(path.read_text())
        return data["ivra"], data.get(
            "source", SETTING_FILE_NAME if path == SHIPPED_SETTING_FILE else str(path)
        )
    return dict(PAPER_DEFAULT), "paper default (no sweep recorded)"


def make_units(splits, n_episodes: int, arms: dict[str, dict | None], chunk: int = 50, first_seed: int = 0):
    units = []
    for split in splits:
        for start in range(first_seed, first_seed + n_episodes, chunk):
            seeds = list(range(start, min(start + chunk, first_seed + n_episodes)))
            for arm, cfg in arms.items():
                units.append(
                    {
                        "key": f"{split}/{arm}/{seeds[0]}-{seeds[-1]}",
                        "split": split,
                        "seeds": seeds,
                        "arm": arm,
                        "ivra": cfg,
                    }
                )
    return units


@dataclass
class TabletopABJob:
    """``policy``: a shipped regime, a run directory, or ``ws://HOST:PORT`` (a policy served by ``ivra serve``;
    ``client_kwargs`` go to :class:`ivra.policies.remote.RemotePolicy`, e.g. ``reconnect_s``)."""

    policy: str = "low"
    threads: int | None = None
    client_kwargs: dict = field(default_factory=dict)
    _policy: object = field(default=None, repr=False, compare=False)

    def setup(self) -> None:
        import torch

        from ivra.minivla.policy import MiniVLAPolicy
        from ivra.policies.remote import RemotePolicy, is_server_url

        if self.threads:
            torch.set_num_threads(self.threads)
        if self._policy is None:  # the CLI's pre-flight may have loaded it in this process already
            if is_server_url(self.policy):
                self._policy = RemotePolicy(self.policy, **self.client_kwargs)
            else:
                self._policy = MiniVLAPolicy(self.policy)

    def resolution(self) -> int:
        spec = getattr(self._policy, "spec", None)
        if spec is not None:
            return spec.image_size
        return int(
            self._policy.image_size or 96
        )  # a served policy that takes any size: the tabletop's default

    def __getstate__(self):
        return {**self.__dict__, "_policy": None}

    def run(self, unit: dict) -> dict:
        from ivra.tabletop.rollout import rollout

        t0 = time.perf_counter()
        self._policy.set_ivra(unit["ivra"])
        try:
            episodes = rollout(self._policy, unit["split"], unit["seeds"], self.resolution())
            handle = getattr(self._policy, "ivra_handle", None)
            meta = {"seconds": round(time.perf_counter() - t0, 3)}
            if handle is not None:
                meta["ivra_calls"] = handle.stats.calls
                meta["hook_seconds"] = round(handle.stats.hook_seconds, 4)
        finally:
            self._policy.set_ivra(None)
        return {"episodes": episodes, "_meta": meta}


def episodes_by_arm(records: list[dict]) -> dict[str, dict[tuple[str, int], dict]]:
    """arm -> {(split, seed): episode}; units that ended in an error are reported, never counted."""
    out: dict[str, dict] = {}
    for rec in records:
        if rec.get("status") != "ok":
            continue
        arm = rec["unit"]["arm"]
        for ep in rec["result"]["episodes"]:
            out.setdefault(arm, {})[(ep["split"], ep["seed"])] = ep
    return out


def paired_outcomes(
    records: list[dict],
    splits,
    below_seed: int | None = None,
    baseline: str = "baseline",
    treatment: str = "ivra",
) -> list[tuple[bool, bool]]:
    """(baseline, treatment) success of every episode both arms finished (seed < ``below_seed``), in the order a
    sequential A/B reads them: by seed, then by split, so every round mixes the splits alike."""
    arms = episodes_by_arm(records)
    base, treat = arms.get(baseline, {}), arms.get(treatment, {})
    order = {s: i for i, s in enumerate(splits)}
    keys = [k for k in base if k in treat and k[0] in order and (below_seed is None or k[1] < below_seed)]
    keys.sort(key=lambda k: (k[1], order[k[0]]))
    return [(bool(base[k]["success"]), bool(treat[k]["success"])) for k in keys]


def summarize(
    records: list[dict], groups, baseline: str = "baseline", treatment: str = "ivra", by: str = "split"
) -> dict:
    """Per group (``by``: ``split`` or ``task``, the task family) and overall: success with Wilson 95 % intervals
    per arm, paired difference (Newcombe CI), exact McNemar. Only episodes both arms finished are compared."""
    arms = episodes_by_arm(records)
    errors = [r["key"] for r in records if r.get("status") != "ok"]
    base, treat = arms.get(baseline, {}), arms.get(treatment, {})
    paired = sorted(k for k in base if k in treat)
    rows = []
    for group in [*groups, "all"]:
        keys = [k for k in paired if group == "all" or base[k][by] == group]
        if not keys:
            continue
        ab = paired_ab([base[k]["success"] for k in keys], [treat[k]["success"] for k in keys])
        rows.append(
            {
                by: group,
                "n": ab.n,
                "baseline": ab.rate_a,
                "baseline_ci": wilson(ab.k_a, ab.n),
                "ivra": ab.rate_b,
                "ivra_ci": wilson(ab.k_b, ab.n),
                "diff": ab.diff,
                "diff_ci": ab.diff_ci,
                "p_mcnemar": ab.p_mcnemar,
                "ivra_only": ab.b_only,
                "baseline_only": ab.a_only,
                "malformed_baseline": sum(base[k]["malformed"] for k in keys),
                "malformed_ivra": sum(treat[k]["malformed"] for k in keys),
            }
        )
    return {"by": by, "rows": rows, "errors": errors}


def families(records: list[dict]) -> list[str]:
    """The task families present in the records, in :data:`ivra.tabletop.TASKS` order."""
    seen = {ep["task"] for rec in records if rec.get("status") == "ok" for ep in rec["result"]["episodes"]}
    return [t for t in TASKS if t in seen] + sorted(seen - set(TASKS))


def format_table(summary: dict) -> str:
    by = summary.get("by", "split")
    label = "task family" if by == "task" else by
    head = f"| {label} | n | baseline % [95% CI] | IVRA % [95% CI] | diff (pp) [95% CI] | McNemar p |\n"
    head += "|---|---:|---|---|---|---:|\n"
    lines = []
    for r in summary["rows"]:
        lines.append(
            f"| {r[by]} | {r['n']} | {100 * r['baseline']:.1f} [{100 * r['baseline_ci'][0]:.1f}, "
            f"{100 * r['baseline_ci'][1]:.1f}] | {100 * r['ivra']:.1f} [{100 * r['ivra_ci'][0]:.1f}, "
            f"{100 * r['ivra_ci'][1]:.1f}] | {100 * r['diff']:+.1f} [{100 * r['diff_ci'][0]:+.1f}, "
            f"{100 * r['diff_ci'][1]:+.1f}] | {r['p_mcnemar']:.3g} |"
        )
    if not lines:
        lines.append(f"| (no {label} with episodes finished by both arms) | 0 | - | - | - | - |")
    text = head + "\n".join(lines)
    total = next((r for r in summary["rows"] if r[by] == "all"), None)
    if total and (total.get("malformed_baseline") or total.get("malformed_ivra")):
        text += (
            f"\n\nEpisodes ended by a non-finite action (never executed; counted as failures): baseline "
            f"{total['malformed_baseline']}, IVRA {total['malformed_ivra']} (each episode's `error` in results.json)."
        )
    if summary["errors"]:
        text += f"\n\n{len(summary['errors'])} unit(s) ended in an error and are not counted."
    return text
