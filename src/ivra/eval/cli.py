"""CLI verbs ``ivra eval libero ...`` and ``ivra doctor`` (heavy imports happen inside the handlers)."""

from __future__ import annotations

import argparse
import json
import sys

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


def _parse_kv(spec: str | None) -> dict:
    """``"a=1,b=x"`` -> {"a": 1, "b": "x"} (values parsed as JSON when possible)."""
    out: dict = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        if "=" not in part:
            raise SystemExit(f"bad setting {part!r}: expected key=value")
        k, v = (s.strip() for s in part.split("=", 1))
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _ivra_settings(spec: str | None, policy: str) -> dict | None:
    """Validated IVRA settings (all fields, via ivra.IVRAConfig) or None."""
    if spec is None:
        if policy == "tiny-vla":
            from ivra.policies.vla import DEFAULT_IVRA

            spec = ",".join(f"{k}={v}" for k, v in DEFAULT_IVRA.items())
        else:
            return None
    from ivra.config import IVRAConfig

    try:
        return IVRAConfig.parse(spec).to_dict()
    except ValueError as exc:
        raise SystemExit(f"--ivra: {exc}") from None


def cmd_eval_libero(args: argparse.Namespace) -> int:
    from ivra.eval.libero import protocol
    from ivra.eval.libero.install import LiberoMissing

    tasks = protocol.parse_index_list(args.tasks, list(range(protocol.N_TASKS[args.suite])))
    states = protocol.parse_index_list(args.init_states, list(range(protocol.NUM_INIT_STATES)))
    if args.ab:
        settings = _ivra_settings(args.ivra, args.policy)
        if settings is None:
            raise SystemExit("--ab needs --ivra layer=..,lam=.. (or --policy tiny-vla, which has defaults)")
        arms = {"baseline": None, "ivra": settings}
    elif args.ivra:
        arms = {"ivra": _ivra_settings(args.ivra, args.policy)}
    else:
        arms = {"baseline": None}
    policy_kwargs = _parse_kv(args.policy_kwargs)
    ray_resources = _parse_kv(args.ray_resources) or None
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
            ray_resources=ray_resources,
            progress=not args.no_progress,
        )
    except LiberoMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. no renderer
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(res["report"]["markdown"].read_text())
    print(f"report: {res['report']['html']}")
    return 1 if res["summary"]["n_errors"] else 0


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
    lib.add_argument("--policy", default="zero", help="zero | tiny-vla | package.module:Class | ws://HOST:PORT (a policy served by `ivra serve`; default zero)")
    lib.add_argument("--policy-kwargs", default=None, help="key=value,... passed to the policy constructor")
    lib.add_argument(
        "--ivra",
        default=None,
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
        "--max-steps", type=int, default=None, help="policy steps per episode (default: the suite's)"
    )
    lib.add_argument("--wait-steps", type=int, default=10)
    lib.add_argument("--resolution", type=int, default=256, help="camera resolution (default 256)")
    lib.add_argument("--seed", type=int, default=0, help="episode seed = seed + init state index")
    lib.add_argument("--executor", choices=("local", "ray", "inline"), default="local")
    lib.add_argument("--workers", type=int, default=1)
    lib.add_argument("--retries", type=int, default=1)
    lib.add_argument(
        "--ray-address", default=None, help="connect to this Ray cluster (default: start a local one)"
    )
    lib.add_argument(
        "--ray-resources", default=None, help="Ray actor options per worker, e.g. num_gpus=0.25,num_cpus=1"
    )
    lib.add_argument(
        "--out", default=None, help="run directory (default runs/libero/<suite>_<policy>_<arms>)"
    )
    lib.add_argument("--videos", type=int, default=0, help="write K side-by-side A/B videos, failures first")
    lib.add_argument("--no-progress", action="store_true")
    lib.set_defaults(func=cmd_eval_libero)

    doc = subparsers.add_parser("doctor", help="check the LIBERO install (import, config, assets, renderer)")
    doc.add_argument("--quick", action="store_true", help="skip the episode smoke test")
    doc.set_defaults(func=cmd_doctor)
