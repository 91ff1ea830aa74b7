"""``ivra serve``: one batched policy server for many simulators and robots, speaking openpi's websocket protocol.

* :mod:`ivra.serve.wire`     msgpack frames with numpy arrays (openpi's convention)
* :mod:`ivra.serve.server`   the websocket server: metadata on connect, validation, whole action chunks, dynamic
  batching (one predict call, per-row seeds and arms)
* :mod:`ivra.serve.sessions` a connection's episodes: episode_id / reset / seed / noise_seed -> each chunk's noise seed
* :mod:`ivra.policies.remote`   :class:`RemotePolicy`, the common policy interface over the wire (eval workers)
* :mod:`ivra.serve.policies` what ``--policy`` can name, including the simulated-latency policy
* :mod:`ivra.serve.blind`    blind real-robot A/B: per-episode arm assignment, operator outcomes, unblinded report
* :mod:`ivra.serve.ray_serve` the same protocol in front of Ray Serve replicas
"""
