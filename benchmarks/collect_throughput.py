"""Collection throughput on HalfCheetah-v5, measured side by side in one run.

Prints the collector's steps/s with 1 and 2 workers, each as a ratio to the bare gymnasium
loop stepping the same env with the same actions (state only, random policy), and the raw
physics limit (mj_step rate / frame skip) for reference. Run:

    python benchmarks/collect_throughput.py [--episodes 20]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.datasets.collector import RandomPolicy, episode_seed

ENV = "HalfCheetah-v5"


def bare_loop(episodes: int, seed: int) -> int:
    """The reference: gymnasium's loop with the collector's actions, nothing stored."""
    env = gym.make(ENV)
    policy = RandomPolicy(env.action_space)
    steps = 0
    for index in range(episodes):
        s = episode_seed(seed, index)
        env.reset(seed=s)
        policy.reset(np.random.default_rng(s))
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(policy.act(None))
            steps += 1
            done = terminated or truncated
    return steps


def physics_limit(seconds: float = 2.0) -> float:
    """Raw mj_step calls per second on one core, divided by the env's frame skip."""
    env = gym.make(ENV)
    env.reset(seed=0)
    model, data = env.unwrapped.model, env.unwrapped.data
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        mujoco.mj_step(model, data, nstep=1000)
        n += 1000
    return n / (time.perf_counter() - start) / env.unwrapped.frame_skip


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20, help="1000-step episodes per run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wmrobot-bench-"))
    try:
        limit = physics_limit()
        t_bare, steps = timed(bare_loop, args.episodes, args.seed)
        rows = [("bare gymnasium loop", steps / t_bare, 1.0)]
        for workers in (1, 2):
            path = str(tmp / f"w{workers}.zarr")
            t, _ = timed(
                lambda w=workers, p=path: collect(
                    p, ENV, episodes=args.episodes, seed=args.seed, workers=w, progress=False
                )
            )
            n = EpisodeStore.open(path).n_transitions
            assert n == steps, (n, steps)
            rows.append((f"collector, {workers} worker(s)", n / t, t_bare / t))
        print(f"{ENV}, {args.episodes} episodes x 1000 steps, random actions, state only")
        print(f"physics limit (1 core): {limit:,.0f} env steps/s")
        print(f"{'':28}{'steps/s':>10}  {'÷ bare loop':>12}  {'÷ physics limit':>16}")
        for name, rate, ratio in rows:
            print(f"{name:28}{rate:>10,.0f}  {ratio:>12.2f}  {rate / limit:>16.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
