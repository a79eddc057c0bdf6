"""What recording costs a stepping process: the collector's `run_episode` (every observation,
action and full physics state kept) against the bare gymnasium loop with the same actions, as
two processes stepping side by side on HalfCheetah-v5, the way two collector workers share a
2-core machine. Rounds alternate the two; each prints the CPU seconds both processes used.
Run:

    python benchmarks/stepping_overhead.py [--episodes 20] [--rounds 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from collect_throughput import ENV, bare_episodes, when_ready


def _part(go, out, recording: bool, first: int, episodes: int) -> None:
    import gymnasium as gym

    from wmrobot.datasets.episodes import episode_seed, run_episode
    from wmrobot.datasets.policies import RandomPolicy

    env = gym.make(ENV)
    policy = RandomPolicy(env.action_space)
    out.put(None)  # started and imported: only the stepping is timed
    go.wait()
    cpu = time.process_time()
    indices = range(first, first + episodes)
    if recording:
        for index in indices:
            run_episode(env, policy, episode_seed(0, index))
    else:  # the same env and policy: neither side times a gym.make
        bare_episodes(env, policy, indices, 0)
    out.put(time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20, help="1000-step episodes a process")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for recording in (False, True):
            calls = [(recording, k * args.episodes, args.episodes) for k in range(2)]
            _, used = when_ready(_part, *calls)
            cpu[recording].append(sum(used))
    ratios = np.array(cpu[True]) / np.array(cpu[False])
    print(
        f"{ENV}, 2 processes x {args.episodes} episodes, {args.rounds} rounds: CPU seconds of "
        f"run_episode ÷ the bare loop {np.median(ratios):.3f} (median; rounds "
        f"{ratios.min():.3f}-{ratios.max():.3f}); bare {np.median(cpu[False]):.2f} s, "
        f"run_episode {np.median(cpu[True]):.2f} s"
    )


if __name__ == "__main__":
    main()
