"""Task step and render rates against the physics limit, measured side by side in one run.

For each wmrobot task, with uniform random actions on fixed seeds: the env's step rate
(``gym.make``, state observations, resets included) ÷ the raw physics limit (the same episodes'
states and controls replayed with bare ``mj_step``: raw step rate ÷ frame skip); and the
step rate with 64 x 64 pixel observations (every step renders a frame). Run:

    python benchmarks/env_throughput.py [--episodes 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported: offscreen frames

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

import wmrobot.envs  # noqa: E402
from wmrobot.envs.physics import FULL  # noqa: E402


def env_loop(env_id: str, episodes: int, seed: int, **kwargs: object) -> tuple[float, list]:
    """Steps/s of the env with uniform random actions, and each episode's first physics state
    and actions (for the raw loop)."""
    env = gym.make(env_id, **kwargs)
    space = env.action_space
    rng = np.random.default_rng(seed)
    limit = env.spec.max_episode_steps
    drawn = rng.uniform(space.low, space.high, (episodes, limit, *space.shape))
    drawn = drawn.astype(space.dtype)
    base = env.unwrapped
    record, steps, elapsed = [], 0, 0.0
    for index in range(episodes):
        start = time.perf_counter()
        env.reset(seed=seed + index)
        elapsed += time.perf_counter() - start
        first = base.get_physics_state()  # outside the timing: the raw loop's input
        start = time.perf_counter()
        taken = 0
        for action in drawn[index]:
            _, _, terminated, truncated, _ = env.step(action)
            taken += 1
            if terminated or truncated:
                break
        elapsed += time.perf_counter() - start
        steps += taken
        record.append((first, drawn[index, :taken]))
    rate = steps / elapsed
    env.close()
    return rate, record


def raw_loop(env_id: str, record: list, **kwargs: object) -> float:
    """Env steps/s of bare ``mj_step`` on the same states and controls: the physics limit."""
    base = gym.make(env_id, **kwargs).unwrapped
    base.reset(seed=0)
    model, data, skip = base.model, base.data, base.frame_skip
    steps = sum(len(actions) for _, actions in record)
    start = time.perf_counter()
    for first, actions in record:
        mujoco.mj_setState(model, data, first, FULL)
        for action in actions:
            data.ctrl[:] = action
            mujoco.mj_step(model, data, nstep=skip)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"{'task':28s} {'physics limit':>14s} {'env steps/s':>12s} {'÷ limit':>8s} "
        f"{'pixels steps/s':>15s} {'÷ state':>8s}"
    )
    for env_id in wmrobot.envs.TASKS:
        ratios, limits, rates, pixel_rates = [], [], [], []
        for _ in range(args.rounds):
            rate, record = env_loop(env_id, args.episodes, args.seed)
            limit = raw_loop(env_id, record)
            pixels, _ = env_loop(env_id, max(1, args.episodes // 4), args.seed, obs_mode="pixels")
            ratios.append(rate / limit)
            limits.append(limit)
            rates.append(rate)
            pixel_rates.append(pixels)
        med = statistics.median
        print(
            f"{env_id:28s} {med(limits):14.0f} {med(rates):12.0f} {med(ratios):8.2f} "
            f"{med(pixel_rates):15.0f} {med(pixel_rates) / med(rates):8.3f}"
        )
    print(
        f"(median of {args.rounds} rounds; {args.episodes} episodes per round, seeds "
        f"{args.seed}..{args.seed + args.episodes - 1}; goal: env ÷ limit >= 0.7)"
    )


if __name__ == "__main__":
    main()
