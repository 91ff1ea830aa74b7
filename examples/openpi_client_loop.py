"""A robot-side loop that talks to `ivra serve` with the unmodified PyPI openpi-client, as it would talk to an
openpi server. Run it in the client's own environment (`bash scripts/setup_openpi_client.sh` makes .venv-openpi):

    .venv-openpi/bin/python examples/openpi_client_loop.py --url ws://127.0.0.1:8000 --episodes 2 --steps 5

Each episode sends its observations with its own ``episode_id`` (in a blind A/B the server assigns the arm per
episode). The camera here is a stand-in: a random image of the size the server asks for (its metadata); on a
robot, read the camera, state and instruction instead and execute the actions. A request the server cannot answer
(an error frame: a bad observation, or an action that is not finite, which the server never sends) ends the
episode where it is: the robot executes nothing more of it.
"""

import argparse

import numpy as np
from openpi_client import websocket_client_policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="ws://127.0.0.1:8000", help="the server (default ws://127.0.0.1:8000)")
    ap.add_argument("--episodes", type=int, default=2, help="episodes to run (default 2)")
    ap.add_argument("--steps", type=int, default=5, help="observations per episode (default 5)")
    ap.add_argument("--prompt", default="put the red block in the green bowl", help="the instruction")
    args = ap.parse_args()
    host, port = args.url.removeprefix("ws://").rsplit(":", 1)
    client = websocket_client_policy.WebsocketClientPolicy(host, int(port))
    meta = client.get_server_metadata()
    h, w, _ = [d or 224 for d in meta["observation"]["image_shape"]]
    rng = np.random.default_rng(0)
    for episode in range(args.episodes):
        actions = None
        for step in range(args.steps):
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # your camera frame
            obs = {"observation/image": image, "prompt": args.prompt, "episode_id": f"episode-{episode}"}
            try:
                actions = np.asarray(client.infer(obs)["actions"])  # execute them on the robot
            except RuntimeError as exc:  # the server's error frame (e.g. a non-finite action it refused to send)
                print(f"episode {episode}: step {step} refused by the server, the robot stops here: {exc}")
                break
        if actions is not None:
            print(f"episode {episode}: last actions {actions.shape} {np.round(actions[0], 3).tolist()}")


if __name__ == "__main__":
    main()
