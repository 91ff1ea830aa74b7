"""CLI verbs ``ivra serve`` (the policy server) and ``ivra trials`` (operator outcomes of a blind A/B)."""

from __future__ import annotations

import argparse
import os
import sys


def _api_key(args) -> str | None:
    from ivra.cliargs import UsageError

    if args.api_key_file:
        try:
            key = open(args.api_key_file, encoding="utf-8").read().strip()
        except OSError as exc:
            raise UsageError(f"--api-key-file {args.api_key_file!r}: {exc.strerror}") from None
        if not key:
            raise UsageError(f"--api-key-file {args.api_key_file!r} is empty: expected the API key")
        return key
    return os.environ.get("IVRA_SERVE_API_KEY") or None


def check_arm(policy, cfg: dict, what: str, policy_name: str | None = None) -> None:
    """Set the server's own arm on the loaded policy once before any client connects (the check of every verb,
    :mod:`ivra.policies.check`): a setting the model cannot take (a layer it lacks) is a :class:`UsageError`, not an
    error in every answer. ``what`` names the arm (``default arm``, ``treatment arm``)."""
    from ivra.policies.check import check_arms

    check_arms(policy, {what: cfg}, policy_name, label=lambda arm: f"--ivra {{setting}} ({arm})")


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from ivra.cliargs import UsageError
    from ivra.config import describe_setting
    from ivra.serve.policies import load_policy
    from ivra.serve.server import PolicyServer, ServeOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # websockets logs every HTTP answer (each /healthz probe) and connection at INFO: its warnings only
    logging.getLogger("websockets").setLevel(logging.WARNING)
    default_ivra = args.ivra  # validated by argparse (ivra.cliargs.ivra_setting)
    policy_kwargs = args.policy_kwargs or {}
    try:
        options = ServeOptions(
            host=args.host,
            port=args.port,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_payload_bytes=int(args.max_payload_mb * 2**20),
            api_key=_api_key(args),
            default_ivra=None if args.ab else default_ivra,
            episode_seed=args.episode_seed,
            roboarena_action_space=args.roboarena_action_space,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    from ivra.policies.registry import missing_environment

    missing = missing_environment(args.policy, serving=True)
    if missing:  # before anything else about the policy (its --policy-kwargs are that environment's business)
        raise UsageError(f"--policy {missing}")
    if not args.ray_replicas:  # loaded here, and every arm checked on it, before anything is written
        try:
            policy, spec = load_policy(args.policy, policy_kwargs)
        except (ValueError, FileNotFoundError, TypeError) as exc:
            raise UsageError(f"--policy {args.policy}: {exc}") from None
        except ImportError as exc:  # a policy of another environment (lerobot, openvla, flower)
            raise UsageError(
                f"--policy {args.policy}: cannot be built in this environment ({exc}); run `ivra serve` in the "
                "policy's own environment (the clients may run anywhere)"
            ) from None
        if default_ivra:
            check_arm(policy, default_ivra, "treatment arm" if args.ab else "default arm", args.policy)
        if args.roboarena_action_space:  # chosen for RoboArena clients: it must fit the policy's actions
            from ivra.serve.roboarena import action_space_for

            try:
                action_space_for(spec.action_dim, args.roboarena_action_space)
            except ValueError as exc:
                raise UsageError(f"--roboarena-action-space: {exc}") from None
    blind = None
    if args.ab:
        if default_ivra is None:
            raise UsageError("--ab blind needs --ivra layer=..,lam=.. (the treatment arm)")
        from ivra.serve.blind import BlindAB

        try:
            blind = BlindAB(args.ab_dir, treatment=default_ivra, seed=args.ab_seed, policy=args.policy)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    ray_handle = None
    if args.ray_replicas:
        try:
            from ivra.serve.ray_serve import RayServeFront, start_replicas
        except ImportError as exc:
            raise UsageError(
                f"--ray-replicas needs ray[serve]: bash scripts/setup.sh dev (pins ray[serve]==2.60.0): {exc}"
            ) from None
        ray_handle = start_replicas(
            args.policy,
            policy_kwargs,
            replicas=args.ray_replicas,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            num_cpus=args.ray_cpus_per_replica,
            num_gpus=args.ray_gpus_per_replica,
            address=args.ray_address,
        )
        server = RayServeFront(ray_handle, options, blind=blind)
    else:
        server = PolicyServer(policy, options, spec, blind=blind)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        horizon, execute = server.chunk_spec()
        print(
            f"ivra serve: {server.metadata()['policy']} on ws://{options.host}:{server.port} "
            f"(answers chunks of {horizon} action{'s' * (horizon != 1)}, {execute} executed by default; "
            f"max batch {options.max_batch}, max wait {options.max_wait_ms} ms"
            + (
                ", blind A/B"
                if blind
                else f", default arm {'IVRA ' + describe_setting(default_ivra) if default_ivra else 'baseline'}"
            )
            + "); health: /healthz; vla-eval clients: ws://HOST:PORT/vla-eval, RoboArena: ws://HOST:PORT/roboarena",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await server.stop()
            print(
                f"ivra serve: stopped after {server.stats['requests']} requests in {server.stats['batches']} batches"
            )

    try:
        asyncio.run(main())
    finally:
        if ray_handle is not None:
            from ivra.serve.ray_serve import shutdown_replicas

            shutdown_replicas()
    return 0


def port(text: str) -> int:
    """A TCP port for ``--port``: 1..65535, or 0 for any free port (the server reports the one it got)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 1..65535 (0: any free port), got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    from ivra.cliargs import (
        ivra_setting,
        key_values,
        nonneg_int,
        open_unit_float,
        positive_float,
        positive_int,
    )
    from ivra.config import PRESETS
    from ivra.serve.blind import DEFAULT_DIR

    if "serve" in sub.choices:
        return
    p = sub.add_parser(
        "serve",
        help="batched policy server speaking openpi's websocket protocol (openpi-client connects unchanged), "
        "vla-eval's (ws://HOST:PORT/vla-eval) and RoboArena's (ws://HOST:PORT/roboarena)",
        description="One model copy for many simulators or robots: requests from all clients are batched into one "
        "policy call and each gets the policy's whole action chunk; a connection is a session (episode_id, reset, "
        "seed, noise_seed choose the episode and its seeded noise); each request may carry its own IVRA arm "
        "('ivra': settings or nil).",
    )
    p.add_argument(
        "--policy",
        required=True,
        help="the policy to serve: low | full (the shipped tiny policies) | a training run directory | zero | "
        "tiny-vla | sim[:k=v,..] (a latency model) | lerobot:smolvla|pi0|pi05 | openvla | openvla-oft | flower "
        "(in their own environments) | package.module:Class; each request gets the policy's whole action chunk",
    )
    p.add_argument(
        "--policy-kwargs",
        default=None,
        type=key_values,
        help="key=value,... passed to the policy constructor",
    )
    p.add_argument(
        "--ivra",
        default=None,
        type=ivra_setting,
        help="IVRA settings of the default arm (with --ab blind: of the treatment arm), e.g. layer=2,lam=0.3, or "
        f"a paper system's preset=NAME[,lam=..] (NAME: {' | '.join(sorted(PRESETS))}) (default: baseline)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1; non-loopback needs an API key)"
    )
    p.add_argument(
        "--port", type=port, default=8000, help="TCP port, 1..65535 (default 8000; 0: any free port)"
    )
    p.add_argument(
        "--max-batch", type=positive_int, default=16, help="most requests per policy call (default 16)"
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=10.0,
        help="longest wait for a batch to fill, in ms (default 10; a batch goes at once when every connected "
        "client is in it)",
    )
    p.add_argument(
        "--max-payload-mb", type=positive_float, default=8.0, help="largest accepted frame in MiB (default 8)"
    )
    p.add_argument(
        "--api-key-file",
        default=None,
        help="file holding the API key clients must send (default: $IVRA_SERVE_API_KEY; none on loopback)",
    )
    p.add_argument(
        "--ab",
        choices=("blind",),
        default=None,
        help="blind real-robot A/B: the arm (baseline or the --ivra treatment) is assigned per episode, balanced "
        "in pairs, and never shown; record outcomes with `ivra trials` (default: none, no A/B)",
    )
    p.add_argument(
        "--ab-dir",
        default=DEFAULT_DIR,
        help=f"blind A/B folder: assignment journal, then the outcomes of `ivra trials` (default {DEFAULT_DIR})",
    )
    p.add_argument(
        "--ab-seed", type=nonneg_int, default=0, help="seed of the balanced arm schedule (default 0)"
    )
    p.add_argument(
        "--episode-seed",
        type=nonneg_int,
        default=0,
        help="vla-eval clients: episode (suite, task_id, episode_idx) is seeded episode_seed + episode_idx, as ivra's "
        "LIBERO job seeds initial state episode_idx (default 0)",
    )
    p.add_argument(
        "--roboarena-action-space",
        choices=("joint_position", "joint_velocity", "cartesian_position", "cartesian_velocity"),
        default=None,
        help="RoboArena clients: the action space announced (default: joint_position for an 8-D policy, "
        "cartesian_velocity for a 7-D one)",
    )
    p.add_argument(
        "--ray-replicas",
        type=nonneg_int,
        default=0,
        help="serve N Ray Serve replicas of the policy behind this websocket front (default 0: in this process)",
    )
    p.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local one)")
    p.add_argument(
        "--ray-cpus-per-replica",
        type=float,
        default=1.0,
        help="CPUs Ray reserves for each replica (default 1)",
    )
    p.add_argument(
        "--ray-gpus-per-replica",
        type=float,
        default=0.0,
        help="GPUs Ray reserves for each replica (default 0; 1: one replica per GPU, 0.5: two share one)",
    )
    p.set_defaults(func=cmd_serve)

    t = sub.add_parser(
        "trials",
        help="record operator outcomes of a blind A/B episode by episode; --report unblinds and computes statistics",
        description="Asks the operator, episode by episode in start order, for success or failure of each episode "
        "the blind A/B server started and no outcome was recorded for (the arm is not shown); --report unblinds. "
        "Its sequential rule is anytime-valid, since an operator may stop and look at any moment.",
    )
    t.add_argument(
        "ab_dir",
        nargs="?",
        default=DEFAULT_DIR,
        metavar="AB_DIR",
        help=f"the blind A/B folder: the --ab-dir given to `ivra serve --ab blind` (default {DEFAULT_DIR})",
    )
    t.add_argument(
        "--report",
        action="store_true",
        help="unblind: success per arm, paired and unpaired statistics; writes report.md and report.json there",
    )
    t.add_argument(
        "--delta",
        type=open_unit_float,
        default=0.1,
        help="the sequential rule's smallest effect of interest (default 0.1 = 10 pp): after each session the rule "
        "says whether the A/B is decided (not which way); --report shows the decision. The rule is always the "
        "anytime-valid one (no --design group): an operator may look after any episode, and a group-sequential "
        "design is valid only at looks planned before the run",
    )
    t.add_argument(
        "--max-pairs",
        type=positive_int,
        default=None,
        help="the most pairs you will run: at that many an undecided A/B is reported as inconclusive (default: no "
        "maximum)",
    )
    t.set_defaults(func=cmd_trials)


def cmd_trials(args: argparse.Namespace) -> int:
    from ivra.cliargs import UsageError
    from ivra.serve.blind import record_outcomes, report

    try:
        if args.report:
            print(report(args.ab_dir, args.delta, args.max_pairs)["markdown"])
            return 0
        return record_outcomes(args.ab_dir, sys.stdin, sys.stdout, args.delta, args.max_pairs)
    except ValueError as exc:  # a damaged journal line
        raise UsageError(str(exc)) from None
