"""CLI verbs ``ivra eval libero ...`` and ``ivra doctor`` (heavy imports happen inside the handlers)."""

from __future__ import annotations

import argparse
import sys

from ivra.cliargs import (
    DESIGN_HELP,
    EXIT_FAILED,
    UsageError,
    check_rounds,
    default_design,
    design_choice,
    ivra_setting,
    key_values,
    nonneg_int,
    open_unit_float,
    out_dir,
    positive_int,
)
from ivra.eval.libero.protocol import PERTURBATIONS, PRESETS, PRO_BASES, SUITES

TORCH_THREADS_HELP = "torch threads per worker process or Ray actor (0: torch's default, one per core; default: 1 with --executor local or ray, whatever the number of workers (torch's default per worker is several times slower for small models on a shared CPU), torch's default inline)"


def _perturbations(spec: str | None, suite: str) -> list[str] | None:
    """``--perturbations all`` or ``swap,lan``: the LIBERO-PRO families to run beside ``suite``."""
    if spec is None:
        return None
    if suite not in PRO_BASES:
        raise UsageError(
            f"--perturbations: suite {suite} has no LIBERO-PRO perturbations; expected --suite one of "
            f"{', '.join(PRO_BASES)}"
        )
    fams = (
        list(PERTURBATIONS)
        if spec.strip().lower() == "all"
        else [f.strip() for f in spec.split(",") if f.strip()]
    )
    bad = [f for f in fams if f not in PERTURBATIONS]
    if bad or not fams:
        raise UsageError(
            f"--perturbations {spec!r}: expected all or some of {', '.join(PERTURBATIONS)} (comma-separated)"
        )
    return list(dict.fromkeys(fams))


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


def check_server_url(url: str) -> None:
    """``ws://HOST:PORT`` (or ``wss://``): a host and a port, nothing else to guess."""
    from urllib.parse import urlsplit

    expected = "expected ws://HOST:PORT or wss://HOST:PORT (a policy served by `ivra serve`)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--policy {url}: {exc}; {expected}") from None
    if not parts.hostname:
        raise UsageError(f"--policy {url}: no host; {expected}")
    if port is None:
        raise UsageError(f"--policy {url}: no port; {expected}")


def _close(policy) -> None:
    close = getattr(policy, "close", None)  # a server connection
    if callable(close):
        close()


def _collect() -> None:
    """Free what dropped policies held (their models, and any GPU memory)."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _build(name: str, kwargs: dict):
    """The policy exactly as the LIBERO job builds it (:func:`ivra.policies.registry.build_policy`), its mistakes as
    :class:`UsageError`."""
    from ivra.policies.registry import build_policy

    try:
        return build_policy(name, kwargs)
    except TypeError as exc:  # an unknown or missing constructor argument
        raise UsageError(f"--policy-kwargs for {name}: {exc}") from None
    except (ValueError, OSError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--policy {name}: {first}") from None


def random_weights_note(name: str, policy) -> str | None:
    """Why ``policy`` runs random weights (a sentence), or None when it runs the weights it was given."""
    note = getattr(policy, "random_weights", None)
    if note:
        return str(note)
    if name == "tiny-vla":
        return "tiny-vla: a random-weight test model (a tiny LLaVA with OpenVLA-style action tokens), not trained"
    return None


def check_policy(name: str, kwargs: dict, arms: dict, keep: bool = False) -> dict:
    """Build the policy in this process the way the LIBERO job does and set every arm's IVRA setting on it once
    (:func:`ivra.policies.check.check_arms`, the check of every verb), before any episode runs; a mistake raises :class:`UsageError`
    naming it. A ``ws://`` policy is checked for a well-formed URL and a server that answers now.

    Returns ``{"policy": the built policy if keep (else freed: None), "random_weights": a sentence or None,
    "stand_in": a sentence or None (a stand-in such as ``sim``, in this process or served),
    "chunk": (chunk_length, execute_steps) of the policy}``.
    """
    import importlib
    import importlib.util
    import inspect

    from ivra.policies.base import chunk_spec
    from ivra.policies.registry import missing_environment

    missing = missing_environment(name)
    if missing:  # before anything else about the policy: its options are for that environment's ivra
        raise UsageError(f"--policy {missing}")
    if name == "zero":
        from ivra.policies.zero import ZeroPolicy

        return {"policy": None, "random_weights": None, "stand_in": None, "chunk": chunk_spec(ZeroPolicy)}
    if name.startswith(("ws://", "wss://")):
        check_server_url(name)
        from ivra.policies.remote import RemotePolicy, ServerUnavailable

        try:  # one connection attempt (2 s), not the minute of reconnects an episode may wait for
            pol = RemotePolicy(name, **{**kwargs, "reconnect_s": 2.0})
            if "reconnect_s" in kwargs:  # what the episodes get (else the client's default)
                pol.reconnect_s = float(kwargs["reconnect_s"])
            else:
                pol.reconnect_s = float(inspect.signature(RemotePolicy).parameters["reconnect_s"].default)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--policy-kwargs for {name}: {exc}") from None
        except ServerUnavailable as exc:
            raise UsageError(
                f"--policy {name}: {exc} (start it with `ivra serve`, or check the host and port)"
            ) from None
    elif name.startswith("lerobot:"):
        from ivra.policies.lerobot import KINDS

        kind = name.split(":", 1)[1]
        if kind not in KINDS:
            raise UsageError(f"unknown --policy {name!r}: lerobot policies are lerobot:{'|'.join(KINDS)}")
        if "path" not in kwargs:
            raise UsageError(
                f"--policy {name} needs --policy-kwargs path=CHECKPOINT (a lerobot checkpoint folder)"
            )
        pol = _build(name, kwargs)
    elif name in ("tiny-vla", "sim", "openvla", "openvla-oft", "flower") or name.startswith("sim:"):
        pol = _build(name, kwargs)  # registry names (sim:k=v,... with its settings inline)
    else:
        if ":" not in name:
            raise UsageError(
                f"unknown --policy {name!r}: expected zero, tiny-vla, sim[:k=v,..], openvla, openvla-oft, flower, "
                "lerobot:smolvla|pi0|pi05, package.module:Class or ws://HOST:PORT"
            )
        mod, cls = name.split(":", 1)
        try:
            module = importlib.import_module(mod)
        except ImportError as exc:
            raise UsageError(f"--policy {name}: cannot import {mod!r} ({exc})") from None
        if not callable(getattr(module, cls, None)):
            raise UsageError(f"--policy {name}: module {mod!r} has no class {cls!r}")
        pol = _build(name, kwargs)

    from ivra.policies.check import check_arms

    try:
        check_arms(pol, arms, name)
        note = random_weights_note(name, pol)
        stand_in = getattr(pol, "stand_in", None) or None
        try:
            chunk = chunk_spec(pol)
        except ValueError as exc:
            raise UsageError(f"--policy {name}: {exc}") from None
    except BaseException:
        _close(pol)
        del pol
        _collect()
        raise
    if keep:
        return {"policy": pol, "random_weights": note, "stand_in": stand_in, "chunk": chunk}
    _close(pol)
    del pol  # the last reference: the workers build their own
    _collect()
    return {"policy": None, "random_weights": note, "stand_in": stand_in, "chunk": chunk}


_RAY_NUMBERS = ("num_cpus", "num_gpus", "memory", "object_store_memory")
_RAY_INTS = {"max_restarts": -1, "max_task_retries": -1, "max_concurrency": 1}  # smallest allowed value
_RAY_STRINGS = ("accelerator_type",)


def ray_resources(text: str) -> dict:
    """``num_gpus=0.25,num_cpus=1`` -> Ray actor options, each value checked (numbers >= 0 for num_cpus, num_gpus,
    memory, object_store_memory; integers for max_restarts, max_task_retries, max_concurrency; a string for
    accelerator_type; ``resources.NAME=AMOUNT`` for a custom resource)."""
    known = ", ".join([*_RAY_NUMBERS, *_RAY_INTS, *_RAY_STRINGS, "resources.NAME"])
    out: dict = {}
    for key, value in key_values(text).items():
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key in _RAY_NUMBERS or key.startswith("resources."):
            if not is_number or value < 0:
                raise argparse.ArgumentTypeError(f"{key}={value}: expected a number >= 0")
            if key.startswith("resources."):
                if not key[len("resources.") :]:
                    raise argparse.ArgumentTypeError(f"{key}: expected resources.NAME=AMOUNT")
                out.setdefault("resources", {})[key[len("resources.") :]] = value
                continue
        elif key in _RAY_INTS:
            if not isinstance(value, int) or isinstance(value, bool) or value < _RAY_INTS[key]:
                raise argparse.ArgumentTypeError(f"{key}={value}: expected an integer >= {_RAY_INTS[key]}")
        elif key in _RAY_STRINGS:
            value = str(value)
        else:
            raise argparse.ArgumentTypeError(f"unknown Ray actor option {key!r}; expected one of: {known}")
        out[key] = value
    if not out:
        raise argparse.ArgumentTypeError(
            f"expected key=value,..., e.g. num_gpus=0.25,num_cpus=1; got {text!r}"
        )
    return out


def error_advice(errors: list[dict], journal) -> str:
    """The error lines every CLI prints, with advice that holds for this command: ``--rerun-errors`` reruns the
    failed units of THIS configuration; a changed option (e.g. a corrected --ivra) is another configuration, which
    the run directory refuses, so it needs another --out."""
    from ivra.eval.executor import format_errors

    lines = format_errors(errors).splitlines()[:-1]  # its generic last line is replaced by what holds here
    lines.append(
        "  if the cause was outside this command (a crash, a lost policy server, memory), fix it and rerun the same "
        "command with --rerun-errors; if an option was wrong (--ivra, --policy-kwargs, ...), the corrected "
        f"command is another configuration: run it with another --out (tracebacks in {journal})"
    )
    return "\n".join(lines)


def cmd_eval_libero(args: argparse.Namespace) -> int:
    from ivra.cliargs import check_executor
    from ivra.config import describe_setting
    from ivra.eval.executor import error_summary
    from ivra.eval.libero import protocol
    from ivra.eval.libero.install import LiberoMissing

    perturbations = _perturbations(args.perturbations, args.suite)
    if perturbations and args.sequential:
        raise UsageError("--sequential runs one suite; drop --perturbations or --sequential")
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
    if args.sequential and not args.ab:
        raise UsageError("--sequential stops a paired A/B early: it needs --ab")
    if args.sequential:
        check_rounds(
            args.design,
            -(-len(states) // args.round),
            f"{len(states)} initial state(s) with --round {args.round}",
        )
    if args.policy == "zero" and any(arms.values()):
        print("note: the zero policy ignores IVRA; its arms are identical by construction", file=sys.stderr)
    policy_kwargs = args.policy_kwargs or {}
    check_executor(args.executor)
    inline = args.executor == "inline"
    # inline: the policy checked here runs the units (loaded once)
    checked = check_policy(args.policy, policy_kwargs, arms, keep=inline)
    chunk_length, default_execute = checked["chunk"]
    preset = protocol.preset(args.protocol)
    if args.execute_steps is None and preset.execute_steps is not None:
        default_execute = min(preset.execute_steps, chunk_length)
        if preset.execute_steps > chunk_length:
            print(
                f"note: protocol {preset.name} executes {preset.execute_steps} actions per chunk; policy "
                f"{args.policy} predicts {chunk_length}: executing {default_execute}",
                file=sys.stderr,
            )
    if args.execute_steps is not None and args.execute_steps > chunk_length:
        raise UsageError(
            f"--execute-steps {args.execute_steps}: expected 1..{chunk_length} (policy {args.policy} predicts "
            f"chunks of {chunk_length} action(s); its default executes {default_execute})"
        )
    from ivra.policies.base import note_warnings

    for line in note_warnings(args.policy, checked):
        print(line, file=sys.stderr)
    print(
        f"ivra eval libero: {args.suite}"
        + (f" + {', '.join(perturbations)}" if perturbations else "")
        + f", protocol {preset.name}, policy {args.policy}, arms "
        + "; ".join(f"{a} (IVRA {describe_setting(c)})" for a, c in arms.items())
        + f", {len(tasks)} task(s) x {len(states)} initial state(s)"
        + f", chunks of {chunk_length}, {args.execute_steps or default_execute} executed"
        + (f", {args.lockstep} episodes in lockstep per worker" if args.lockstep > 1 else ""),
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
            torch_threads=args.torch_threads,
            retries=args.retries,
            videos=args.videos,
            ray_address=args.ray_address,
            ray_resources=args.ray_resources or None,
            progress=not args.no_progress,
            rerun_errors=args.rerun_errors,
            sequential={"round": args.round, "delta": args.delta, "design": args.design}
            if args.sequential
            else None,
            policy_instance=checked["policy"],
            random_weights=checked["random_weights"],
            stand_in=checked.get("stand_in"),
            lockstep=args.lockstep,
            execute_steps=args.execute_steps
            if args.execute_steps is not None or preset.execute_steps is None
            else default_execute,
            chunk=checked["chunk"],
            perturbations=perturbations,
            protocol_name=preset.name,
            render_mode=args.render,
        )
    except LiberoMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. no renderer
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {res['report']['html']}")
    print(res["report"]["markdown"].read_text())  # ends with the sequential decision, when there is one
    errors = error_summary(res["records"])
    if errors:
        print(error_advice(errors, res["out"] / "journal.jsonl"), file=sys.stderr)
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
    lib.add_argument(
        "--suite",
        choices=SUITES,
        required=True,
        metavar="SUITE",
        help="the LIBERO suite to evaluate on: " + ", ".join(SUITES[:5]) + " or a LIBERO-PRO perturbed suite "
        "<base>_{swap,object,lan,task} (base spatial/object/goal/10)",
    )
    lib.add_argument(
        "--perturbations",
        default=None,
        metavar="FAMILIES",
        help="also run the suite's LIBERO-PRO perturbations on the same tasks, initial states, seeds and arms: all, "
        "or some of swap,object,lan,task; the report adds one row per family (default none)",
    )
    lib.add_argument(
        "--protocol",
        choices=tuple(PRESETS),
        default="ivra",
        help="evaluation preset: max steps per suite, wait steps, resolution, env seeding, seed base, execute steps "
        "as in "
        + ", ".join(PRESETS)
        + "'s published LIBERO evals; --max-steps/--wait-steps/--resolution/--seed/"
        "--execute-steps given explicitly win and are listed as deviations (default ivra)",
    )
    lib.add_argument(
        "--policy",
        default="zero",
        help="zero | tiny-vla | sim[:fixed_ms=..,per_sample_ms=..,chunk=..,execute=..] (a latency stand-in) | openvla | "
        "openvla-oft | flower | lerobot:smolvla|pi0|pi05 | package.module:Class | ws://HOST:PORT (a policy served "
        "by `ivra serve`, any environment) (default zero)",
    )
    lib.add_argument(
        "--policy-kwargs",
        default=None,
        type=key_values,
        help="key=value,... passed to the policy constructor, e.g. path=CHECKPOINT (lerobot:...), "
        "model=CHECKPOINT_DIR or model=tiny (OpenVLAPolicy; FlowerPolicy and OpenVLAOFTPolicy: model=tiny), "
        "device=cuda; model=tiny runs RANDOM weights, which the output, the manifest and the report say",
    )
    lib.add_argument(
        "--ivra",
        default=None,
        type=ivra_setting,
        help="IVRA setting of the ivra arm: key=value,... with the IVRAConfig fields (layer, lam, affinity_layer, "
        "affinity_feature, affinity_mode, temperature, position, strict), e.g. layer=2,lam=0.3; or preset=NAME[,lam=..] "
        "for a paper system's setting with fields overridden (presets: llara, flower, openvla). Checked against the "
        "loaded policy before the first episode (tiny-vla default: layer=2,lam=0.3)",
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
    lib.add_argument(
        "--wait-steps",
        type=nonneg_int,
        default=None,
        help="no-op steps after reset, before the policy acts, while the objects settle (default: the protocol's, 10)",
    )
    lib.add_argument(
        "--resolution",
        type=positive_int,
        default=None,
        help="camera resolution (default: the protocol's, 256)",
    )
    lib.add_argument(
        "--seed",
        type=nonneg_int,
        default=None,
        help="episode seed = seed + init state index (default: the protocol's, 0; lerobot 1000)",
    )
    lib.add_argument(
        "--executor",
        choices=("local", "ray", "inline"),
        default="local",
        help="where episodes run: local (--workers spawned processes on this machine), ray (Ray actors, "
        "--ray-address, --ray-resources) or inline (this process, one at a time; the policy checked up front is "
        "reused) (default local)",
    )
    lib.add_argument("--workers", type=positive_int, default=1, help="parallel workers (default 1)")
    lib.add_argument("--torch-threads", type=nonneg_int, default=None, metavar="N", help=TORCH_THREADS_HELP)
    lib.add_argument(
        "--lockstep",
        type=positive_int,
        default=1,
        metavar="K",
        help="episodes each worker steps together: K simulators, one batched policy call per step for the episodes "
        "that need a chunk; every episode keeps its own seed, arm and action queue, so the results equal K=1 "
        "(default 1; a resumed run may change it)",
    )
    lib.add_argument(
        "--render",
        choices=("demand", "every"),
        default="demand",
        help="demand: the cameras are rendered only for the observations a policy or a video reads (not the wait "
        "steps, resets or steps inside a chunk; the results are identical, tested); every: every step, as LIBERO "
        "does (default demand; a resumed run may change it)",
    )
    lib.add_argument(
        "--execute-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="actions executed from each predicted chunk before the policy is asked again (openpi's replan_steps; "
        "1..the policy's chunk length; default: the policy's own execute_steps)",
    )
    lib.add_argument(
        "--retries",
        type=nonneg_int,
        default=1,
        help="extra attempts for a unit that raised (a crash, a lost server) before it is journaled as an error "
        "(default 1)",
    )
    lib.add_argument(
        "--ray-address", default=None, help="connect to this Ray cluster (default: start a local one)"
    )
    lib.add_argument(
        "--ray-resources",
        default=None,
        type=ray_resources,
        help="Ray actor options per worker, e.g. num_gpus=0.25,num_cpus=1 (num_cpus, num_gpus, memory, "
        "object_store_memory, max_restarts, max_task_retries, max_concurrency, accelerator_type, resources.NAME)",
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
    lib.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in logs and CI)")
    lib.add_argument(
        "--rerun-errors",
        action="store_true",
        help="on resume, also rerun the units whose journaled result is an error (same options: a changed option "
        "is another configuration and needs another --out)",
    )
    lib.add_argument(
        "--sequential",
        action="store_true",
        help="with --ab: run in rounds of --round initial states (every task) and stop as soon as the --design "
        "decides: an effect, or none as large as --delta",
    )
    lib.add_argument("--design", type=design_choice, default=default_design(), help=DESIGN_HELP)
    lib.add_argument(
        "--round",
        type=positive_int,
        default=5,
        help="with --sequential: initial states per round (default 5: 50 pairs a round on a 10-task suite)",
    )
    lib.add_argument(
        "--delta",
        type=open_unit_float,
        default=0.02,
        help="with --sequential: the smallest effect of interest, a difference of rates (default 0.02 = 2 pp)",
    )
    lib.set_defaults(func=cmd_eval_libero)

    doc = subparsers.add_parser("doctor", help="check the LIBERO install (import, config, assets, renderer)")
    doc.add_argument("--quick", action="store_true", help="skip the episode smoke test")
    doc.set_defaults(func=cmd_doctor)
