"""Task step and render rates against the physics limit, measured side by side in one run.

For each wmrobot task, with uniform random actions on fixed seeds: the env's step rate
(``gym.make``, state observations) ÷ the raw physics limit (the same episodes' states and
controls replayed with bare ``mj_step``: raw step rate ÷ frame skip); the time of a seeded
reset; and the step rate with 64 x 64 pixel observations (every step renders a frame). Run:

    python benchmarks/env_throughput.py [--episodes 100] [--rounds 3]
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


def side_by_side(env_id: str, episodes: int, seed: int, **kwargs: object) -> dict[str, float]:
    """Each episode of uniform random actions twice, back to back: stepped through the env
    (``gym.make``), then replayed from the same first state with the same controls by bare
    ``mj_step`` (the physics limit). Alternating per episode puts both under the same load
    on a shared machine. Returns env steps/s (steps only), limit steps/s and seconds per
    seeded reset."""
    env = gym.make(env_id, **kwargs)
    space = env.action_space
    rng = np.random.default_rng(seed)
    limit = env.spec.max_episode_steps
    drawn = rng.uniform(space.low, space.high, (episodes, limit, *space.shape))
    drawn = drawn.astype(space.dtype)
    base = env.unwrapped
    model, data, skip = base.model, base.data, base.frame_skip
    steps, stepping, physics, resetting = 0, 0.0, 0.0, 0.0
    for index in range(episodes):
        start = time.perf_counter()
        env.reset(seed=seed + index)
        resetting += time.perf_counter() - start
        first = base.get_physics_state()
        start = time.perf_counter()
        taken = 0
        for action in drawn[index]:
            _, _, terminated, truncated, _ = env.step(action)
            taken += 1
            if terminated or truncated:
                break
        stepping += time.perf_counter() - start
        steps += taken
        mujoco.mj_setState(model, data, first, FULL)
        start = time.perf_counter()
        for action in drawn[index, :taken]:
            data.ctrl[:] = action
            mujoco.mj_step(model, data, nstep=skip)
        physics += time.perf_counter() - start
    env.close()
    return {"env": steps / stepping, "limit": steps / physics, "reset": resetting / episodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"{'task':24s} {'physics limit':>13s} {'env steps/s':>11s} {'÷ limit':>7s} "
        f"{'reset':>8s} {'pixels steps/s':>14s} {'÷ state':>7s}"
    )
    med = statistics.median
    for env_id in wmrobot.envs.TASKS:
        runs = [side_by_side(env_id, args.episodes, args.seed) for _ in range(args.rounds)]
        pixels = [
            side_by_side(env_id, max(1, args.episodes // 10), args.seed, obs_mode="pixels")["env"]
            for _ in range(args.rounds)
        ]
        env, limit = med(r["env"] for r in runs), med(r["limit"] for r in runs)
        ratio = med(r["env"] / r["limit"] for r in runs)
        print(
            f"{env_id:24s} {limit:13.0f} {env:11.0f} {ratio:7.2f} "
            f"{med(r['reset'] for r in runs) * 1e6:6.0f}µs {med(pixels):14.0f} "
            f"{med(pixels) / env:7.3f}"
        )
    print(
        f"(median of {args.rounds} rounds; {args.episodes} episodes of uniform random actions "
        f"per round, seeds {args.seed}..{args.seed + args.episodes - 1}; steps timed apart from "
        f"resets; pixels: 64 x 64 frames, one rendered per step; goal: env ÷ limit >= 0.7)"
    )


if __name__ == "__main__":
    main()
