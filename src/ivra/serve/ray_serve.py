"""Beyond one GPU: the policy as Ray Serve replicas, behind the same websocket protocol.

``ivra serve --policy P --ray-replicas 2 [--ray-address auto] [--ray-gpus-per-replica 1]``:

* each replica is a Ray Serve deployment replica (``PolicyDeployment``) holding one copy of the policy (one per GPU
  with ``--ray-gpus-per-replica 1``); Ray Serve's own ``@serve.batch`` gathers the requests a replica receives
  into one ``predict`` call (``--max-batch``, ``--max-wait-ms``), per-sample IVRA arms and noise seeds included,
  and each request gets its whole chunk (H, action_dim), as from the single-process server;
* Ray Serve routes each request to a replica (its power-of-two-choices router), so there is no home-made load
  balancer; no Ray HTTP proxy is started (``proxy_location="Disabled"``): the only listener is our websocket
  front on ``--host``/``--port``, with the same protocol, validation, error frames, API key and health check as
  the single-process server, including its sessions (the front keeps each connection's episode and assigns the
  noise seed of every chunk; :class:`RayServeFront` only replaces the batch loop by calls to the deployment
  handle).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import numpy as np

from ivra.serve.policies import ObsSpec
from ivra.serve.server import PolicyServer, ServeOptions

log = logging.getLogger("ivra.serve")
APP_NAME = "ivra-policy"


def _deployment_class():
    from ray import serve

    class PolicyDeployment:
        def __init__(
            self, policy: str, policy_kwargs: dict, torch_threads: int, max_batch: int, max_wait_s: float
        ):
            if torch_threads:
                import torch

                torch.set_num_threads(torch_threads)
            from ivra.serve.policies import load_policy

            self.policy, self.spec = load_policy(policy, policy_kwargs)
            self.replica = f"{os.uname().nodename}:{os.getpid()}"
            self.act_batch.set_max_batch_size(max_batch)
            self.act_batch.set_batch_wait_timeout_s(max_wait_s)

        def describe(self) -> dict:
            from ivra.policies.base import chunk_spec, policy_notes

            return {
                **policy_notes(self.policy),
                "name": getattr(self.policy, "name", type(self.policy).__name__),
                "spec": self.spec.to_dict(),
                "chunk": list(chunk_spec(self.policy)),
                "nonfinite_means": getattr(self.policy, "nonfinite_means", None),
            }

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
        async def act_batch(self, items: list[dict]) -> list[dict]:
            from ivra.policies.base import predict_with_arms

            chunks = predict_with_arms(
                self.policy,
                [i["obs"] for i in items],
                [i["instruction"] for i in items],
                [i["seed"] for i in items],
                [i["ivra"] for i in items],
            )
            return [
                {"actions": np.asarray(c), "batch_size": len(items), "replica": self.replica} for c in chunks
            ]

        async def __call__(self, item: dict) -> dict:
            return await self.act_batch(item)

    return PolicyDeployment


def start_replicas(
    policy: str,
    policy_kwargs: dict | None = None,
    replicas: int = 2,
    max_batch: int = 16,
    max_wait_ms: float = 10.0,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    torch_threads: int = 1,
    address: str | None = None,
):
    """Start (or connect to) Ray, deploy ``replicas`` copies of the policy; returns the deployment handle."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        from ivra.eval.executor import _ray_pythonpath

        kwargs: dict[str, Any] = {
            "ignore_reinit_error": True,
            "include_dashboard": False,
            "log_to_driver": False,
        }
        if address:
            kwargs["address"] = address
        else:
            kwargs["runtime_env"] = {
                "env_vars": {"PYTHONPATH": _ray_pythonpath(), "OMP_NUM_THREADS": str(torch_threads)}
            }
        ray.init(**kwargs)
    serve.start(proxy_location="Disabled")
    cls = _deployment_class()
    dep = serve.deployment(
        cls,
        name="PolicyDeployment",
        num_replicas=int(replicas),
        ray_actor_options={"num_cpus": float(num_cpus), "num_gpus": float(num_gpus)},
        max_ongoing_requests=max(2 * max_batch, 8),
    )
    app = dep.bind(policy, dict(policy_kwargs or {}), torch_threads, int(max_batch), max_wait_ms / 1000.0)
    return serve.run(app, name=APP_NAME, route_prefix=None)


def shutdown_replicas() -> None:
    from ray import serve

    try:
        serve.delete(APP_NAME)
    finally:
        serve.shutdown()


class RayServeFront(PolicyServer):
    """The websocket server of :mod:`ivra.serve.server` with the batching and the model in Ray Serve replicas."""

    def __init__(self, handle, options: ServeOptions | None = None, blind=None):
        described = handle.describe.remote().result(timeout_s=600)
        spec = ObsSpec.from_dict(described["spec"])

        class _Named:  # the front holds no model, only what the metadata says of it
            name = described["name"]
            chunk_length, execute_steps = described["chunk"]
            nonfinite_means = described.get("nonfinite_means")
            random_weights = described.get("random_weights")
            stand_in = described.get("stand_in")

        super().__init__(_Named(), options, spec, blind=blind)
        self.handle = handle
        self.replicas_seen: dict[str, int] = {}

    def metadata(self) -> dict:
        return {**super().metadata(), "backend": "ray-serve"}

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        tasks: set[asyncio.Task] = set()
        while True:
            req = await self._queue.get()
            t = asyncio.create_task(self._forward(req))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    async def _forward(self, req) -> None:
        from ivra.serve.server import openpi_reply

        try:
            out = await self.handle.remote(
                {"obs": req.obs, "instruction": req.instruction, "ivra": req.ivra, "seed": req.seed}
            )
        except Exception as exc:  # noqa: BLE001 -- the client gets the error, the front lives
            if not req.future.done():
                req.future.set_result(f"policy error: {type(exc).__name__}: {exc}")
            return
        self.stats["batches"] += 1
        sizes = self.stats["batch_sizes"]
        sizes[out["batch_size"]] = sizes.get(out["batch_size"], 0) + 1
        self.replicas_seen[out["replica"]] = self.replicas_seen.get(out["replica"], 0) + 1
        actions = np.asarray(out["actions"])
        if not np.isfinite(actions).all():  # never sent: the client gets the error instead
            if not req.future.done():
                req.future.set_result(self._refuse_nonfinite(actions, None, out["batch_size"]))
            return
        if not req.future.done():
            timing = {"batch_size": out["batch_size"], "replica": out["replica"]}
            encode = req.encode or openpi_reply  # openpi's reply: the whole chunk (H, action_dim)
            req.future.set_result(encode(req, actions, timing))
