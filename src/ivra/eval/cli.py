"""CLI verbs ``ivra eval libero ...`` and ``ivra doctor`` (heavy imports happen inside the handlers)."""

from __future__ import annotations

import argparse
import sys

from ivra.cliargs import (
    EXIT_FAILED,
    UsageError,
    ivra_setting,
    key_values,
    nonneg_int,
    out_dir,
    positive_int,
)

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


def _ivra_settings(setting: dict | None, policy: str) -> dict | None:
    """The validated IVRA settings (all fields) given on the command line, the tiny-vla default, or None."""
    if setting is not None:
        return setting
    if policy == "tiny-vla":
        from ivra.config import IVRAConfig
        from ivra.policies.vla import DEFAULT_IVRA

        return IVRAConfig(**DEFAULT_IVRA).to_dict()
    return None


def _index_list(spec: str | None, n: int, what: str, flag: str) -> list[int]:
    from ivra.eval.libero import protocol

    try:
        values = protocol.parse_index_list(spec, list(range(n)))
    except ValueError:
        raise UsageError(f"{flag} {spec!r}: expected {what} like 0,2,5-9 or all") from None
    if not values:
        raise UsageError(f"{flag} {spec!r}: selects no {what}")
    bad = [v for v in values if not 0 <= v < n]
    if bad:
        raise UsageError(f"{flag} {spec!r}: {bad[0]} is out of range; expected {what} in 0..{n - 1}")
    return values


def check_policy(name: str, kwargs: dict, arms: dict) -> None:
    """Resolve the policy name (and, for the built-in tiny-vla, attach every arm's IVRA setting once) before any
    episode runs; a mistake raises :class:`UsageError` naming it."""
    import importlib
    import importlib.util

    if name == "zero":
        return
    if name == "tiny-vla":
        from ivra.adapters import IVRAError
        from ivra.config import describe_setting
        from ivra.policies.vla import TinyVLAPolicy

        try:
            pol = TinyVLAPolicy(**kwargs)
        except TypeError as exc:
            raise UsageError(f"--policy-kwargs for tiny-vla: {exc}") from None
        for arm, cfg in arms.items():
            if cfg:
                try:
                    pol.set_ivra(cfg)
                    pol.set_ivra(None)
                except (IVRAError, ValueError) as exc:
                    raise UsageError(f"IVRA setting {describe_setting(cfg)} (arm {arm}): {exc}") from None
        return
    if name.startswith("lerobot:"):
        from ivra.policies.lerobot import KINDS

        kind = name.split(":", 1)[1]
        if kind not in KINDS:
            raise UsageError(f"unknown --policy {name!r}: lerobot policies are lerobot:{'|'.join(KINDS)}")
        if importlib.util.find_spec("lerobot") is None:
            raise UsageError(
                f"--policy {name}: lerobot is not installed in this environment; run ivra from the lerobot "
                "environment (.venv/bin/nox -s lerobot creates .nox/lerobot; then .nox/lerobot/bin/ivra ...)"
            )
        if "path" not in kwargs:
            raise UsageError(
                f"--policy {name} needs --policy-kwargs path=CHECKPOINT (a lerobot checkpoint folder)"
            )
        return
    if ":" not in name:
        raise UsageError(
            f"unknown --policy {name!r}: expected zero, tiny-vla, lerobot:smolvla|pi0|pi05 or package.module:Class"
        )
    mod, cls = name.split(":", 1)
    try:
        module = importlib.import_module(mod)
    except ImportError as exc:
        raise UsageError(f"--policy {name}: cannot import {mod!r} ({exc})") from None
    if not callable(getattr(module, cls, None)):
        raise UsageError(f"--policy {name}: module {mod!r} has no class {cls!r}")


def cmd_eval_libero(args: argparse.Namespace) -> int:
    from ivra.config import describe_setting
    from ivra.eval.executor import error_summary, format_errors
    from ivra.eval.libero import protocol
    from ivra.eval.libero.install import LiberoMissing

    tasks = _index_list(args.tasks, protocol.N_TASKS[args.suite], "task ids", "--tasks")
    states = _index_list(args.init_states, protocol.NUM_INIT_STATES, "initial-state indices", "--init-states")
    if args.ab:
        settings = _ivra_settings(args.ivra, args.policy)
        if settings is None:
            raise UsageError("--ab needs --ivra layer=..,lam=.. (or --policy tiny-vla, which has defaults)")
        arms = {"baseline": None, "ivra": settings}
    elif args.ivra:
        arms = {"ivra": args.ivra}
    else:
        arms = {"baseline": None}
    if args.policy == "zero" and any(arms.values()):
        print("note: the zero policy ignores IVRA; its arms are identical by construction", file=sys.stderr)
    policy_kwargs = args.policy_kwargs or {}
    check_policy(args.policy, policy_kwargs, arms)
    print(
        f"ivra eval libero: {args.suite}, policy {args.policy}, arms "
        + "; ".join(f"{a} (IVRA {describe_setting(c)})" for a, c in arms.items())
        + f", {len(tasks)} task(s) x {len(states)} initial state(s)",
        file=sys.stderr,
    )
    try:
        from ivra.eval.libero.run import run_libero

        res = run_libero(
            suite=args.suite,
            policy=args.policy,
            policy_kwargs=policy_kwargs,
            arms=arms,
            tasks=tasks,
            init_states=states,
            max_steps=args.max_steps,
            wait_steps=args.wait_steps,
            resolution=args.resolution,
            seed=args.seed,
            out=args.out,
            executor=args.executor,
            workers=args.workers,
            retries=args.retries,
            videos=args.videos,
            ray_address=args.ray_address,
            ray_resources=args.ray_resources or None,
            progress=not args.no_progress,
            rerun_errors=args.rerun_errors,
        )
    except LiberoMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. no renderer
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(res["report"]["markdown"].read_text())
    print(f"report: {res['report']['html']}")
    errors = error_summary(res["records"])
    if errors:
        print(format_errors(errors, res["out"] / "journal.jsonl"), file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ivra.eval.libero.doctor import doctor

    return doctor(smoke=not args.quick)


def register(subparsers: argparse._SubParsersAction) -> None:
    if "eval" in subparsers.choices:  # the main CLI may call register once per verb
        return
    ev = subparsers.add_parser("eval", help="closed-loop evaluation on a benchmark (LIBERO)")
    ev_sub = ev.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    ev.set_defaults(func=lambda a: (ev.print_help(), 2)[1])
    lib = ev_sub.add_parser(
        "libero",
        help="LIBERO closed-loop evaluation, optionally paired A/B baseline vs IVRA",
        description="Community protocol by default (50 init states/task, 10 wait steps, per-suite max steps, "
        "256 px); every deviation is recorded in the manifest and the report. Resumable: rerun the same command.",
    )
    lib.add_argument("--suite", choices=SUITES, required=True)
    lib.add_argument(
        "--policy",
        default="zero",
        help="zero | tiny-vla | lerobot:smolvla|pi0|pi05 | package.module:Class | ws://HOST:PORT (a policy served "
        "by `ivra serve`, any environment) (default zero)",
    )
    lib.add_argument(
        "--policy-kwargs",
        default=None,
        type=key_values,
        help="key=value,... passed to the policy constructor",
    )
    lib.add_argument(
        "--ivra",
        default=None,
        type=ivra_setting,
        help="IVRA settings, e.g. layer=20,lam=0.3 (tiny-vla default: layer=2,lam=0.3)",
    )
    lib.add_argument(
        "--ab",
        action="store_true",
        help="paired A/B: arm 'baseline' (no IVRA) and arm 'ivra' on the same units",
    )
    lib.add_argument("--tasks", default=None, help="task ids, e.g. 0,1 or 0-4 (default all)")
    lib.add_argument("--init-states", default=None, help="initial-state indices, e.g. 0-49 (default 0-49)")
    lib.add_argument(
        "--max-steps", type=positive_int, default=None, help="policy steps per episode (default: the suite's)"
    )
    lib.add_argument("--wait-steps", type=nonneg_int, default=10)
    lib.add_argument("--resolution", type=positive_int, default=256, help="camera resolution (default 256)")
    lib.add_argument("--seed", type=nonneg_int, default=0, help="episode seed = seed + init state index")
    lib.add_argument("--executor", choices=("local", "ray", "inline"), default="local")
    lib.add_argument("--workers", type=positive_int, default=1)
    lib.add_argument("--retries", type=nonneg_int, default=1)
    lib.add_argument(
        "--ray-address", default=None, help="connect to this Ray cluster (default: start a local one)"
    )
    lib.add_argument(
        "--ray-resources",
        default=None,
        type=key_values,
        help="Ray actor options per worker, e.g. num_gpus=0.25,num_cpus=1",
    )
    lib.add_argument(
        "--out",
        default=None,
        type=out_dir,
        help="run directory (default runs/libero/<suite>_<policy>_<arms>)",
    )
    lib.add_argument(
        "--videos", type=nonneg_int, default=0, help="write K side-by-side A/B videos, failures first"
    )
    lib.add_argument("--no-progress", action="store_true")
    lib.add_argument(
        "--rerun-errors",
        action="store_true",
        help="on resume, also rerun the units whose journaled result is an error",
    )
    lib.set_defaults(func=cmd_eval_libero)

    doc = subparsers.add_parser("doctor", help="check the LIBERO install (import, config, assets, renderer)")
    doc.add_argument("--quick", action="store_true", help="skip the episode smoke test")
    doc.set_defaults(func=cmd_doctor)
