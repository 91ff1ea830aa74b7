"""Runs in the openpi-client environment (.venv-openpi: numpy 1.x, the unmodified PyPI ``openpi-client``).

    python openpi_driver.py --url ws://127.0.0.1:PORT --obs in.npz --clients K --out out.npz [--api-key KEY]

``in.npz`` holds ``images`` (N, H, W, 3) uint8, optionally ``wrist``/``state``, and ``meta`` (a JSON string with
``prompts`` and optionally ``ivra``: one entry per observation, omitted key = server default). K threads, each
with its own ``WebsocketClientPolicy`` (its own connection), send observations i, i+K, ... one at a time. The
answers (actions) go to ``out.npz`` with the server metadata and the errors (text frames) the client raised.
"""

import argparse
import json
import threading

import numpy as np
from openpi_client import websocket_client_policy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--obs", required=True)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args()
    data = np.load(args.obs)
    meta = json.loads(str(data["meta"]))
    prompts, arms = meta["prompts"], meta.get("ivra")
    n = len(prompts)
    actions = [None] * n
    errors = [None] * n
    server_meta = {}
    barrier = threading.Barrier(args.clients)

    def worker(k):
        client = websocket_client_policy.WebsocketClientPolicy(args.url, api_key=args.api_key)
        server_meta.update(client.get_server_metadata())
        barrier.wait()
        for i in range(k, n, args.clients):
            obs = {"observation/image": data["images"][i], "prompt": prompts[i]}
            if "wrist" in data:
                obs["observation/wrist_image"] = data["wrist"][i]
            if "state" in data:
                obs["observation/state"] = data["state"][i]
            if arms is not None and arms[i] != "default":
                obs["ivra"] = arms[i]
            try:
                actions[i] = np.asarray(client.infer(obs)["actions"])
            except RuntimeError as exc:
                errors[i] = str(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    ok = [a for a in actions if a is not None]
    out = np.full((n, *ok[0].shape), np.nan) if ok else np.zeros((n, 0))
    for i, a in enumerate(actions):
        if a is not None:
            out[i] = a
    np.savez(args.out, actions=out, meta=json.dumps({"server": server_meta, "errors": errors}, default=str))


if __name__ == "__main__":
    main()
