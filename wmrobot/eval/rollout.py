"""Evaluate any policy with ``predict`` in the real env on fixed start/goal pairs and budget."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import imageio.v3 as iio
import numpy as np

from wmrobot.envs import make_env


class Policy(Protocol):
    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, Any]: ...


@dataclass
class EpisodeRecord:
    pair: int
    success: bool
    steps: int  # steps taken (the budget when it failed)
    final_distance: float
    ret: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stack(obs_list: list[Any]) -> Any:
    """A batch of observations: one array per key of Dict observations, one array of Box ones."""
    if isinstance(obs_list[0], dict):
        return {k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]}
    return np.stack(obs_list)


def evaluate(
    policy: Policy,
    env_id: str,
    env_kwargs: dict[str, Any],
    pairs: list[dict[str, Any]],
    budget: int,
    seeds: list[int] | None = None,
) -> list[EpisodeRecord]:
    """Run one episode per start/goal pair, all in lock-step so the policy acts in batches.

    Episode i resets with seed ``seeds[i]`` (default i) and ``options=pairs[i]``; an empty
    pair lets the seed draw the start and the goal.

    An episode ends on success (the env terminates) or after ``budget`` steps. The policy
    sees only observations; it never reaches the simulator. Finished episodes leave the batch;
    a policy with per-episode state is told which remain through ``keep(indices)``.
    """
    envs = [make_env(env_id, env_kwargs, max_episode_steps=budget) for _ in pairs]
    seeds = list(range(len(pairs))) if seeds is None else list(seeds)
    obs = [
        env.reset(seed=seed, options=pair)[0]
        for env, pair, seed in zip(envs, pairs, seeds, strict=True)
    ]
    if hasattr(policy, "reset"):
        policy.reset()
    done = np.zeros(len(envs), dtype=bool)
    records: list[EpisodeRecord | None] = [None] * len(envs)
    returns = np.zeros(len(envs))
    for t in range(budget):
        active = np.flatnonzero(~done)
        actions, _ = policy.predict(_stack([obs[i] for i in active]), deterministic=True)
        for i, action in zip(active, actions, strict=True):
            env = envs[i]
            obs[i], reward, terminated, truncated, info = env.step(action)
            returns[i] += reward
            if terminated or truncated or t == budget - 1:
                done[i] = True
                records[i] = EpisodeRecord(
                    pair=int(i),
                    success=bool(info.get("is_success", False)),
                    steps=t + 1,
                    final_distance=float(info.get("distance", np.nan)),
                    ret=float(returns[i]),
                )
        if done.all():
            break
        if done[active].any() and hasattr(policy, "keep"):
            policy.keep(np.flatnonzero(~done[active]))
    for env in envs:
        env.close()
    return [r for r in records if r is not None]


def decision_latency_ms(policy: Policy, obs: dict[str, np.ndarray], calls: int = 20) -> float:
    """Median wall time of one decision for one environment (after two warm-up calls)."""
    if hasattr(policy, "reset"):
        policy.reset()
    times = []
    for i in range(calls + 2):
        start = time.perf_counter()
        policy.predict(obs, deterministic=True)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def record_video(
    policy: Policy,
    env_id: str,
    env_kwargs: dict[str, Any],
    pair: dict[str, Any],
    budget: int,
    path: str,
    fps: int = 20,
) -> bool:
    """Render one episode to a GIF/MP4 at ``path``; returns whether it succeeded."""
    env = make_env(env_id, env_kwargs, max_episode_steps=budget, render_mode="rgb_array")
    obs, _ = env.reset(seed=0, options=pair)
    if hasattr(policy, "reset"):
        policy.reset()
    frames, success = [env.render()], False
    for _ in range(budget):
        action, _ = policy.predict(obs, deterministic=True)
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(env.render())
        success = bool(info.get("is_success", False))
        if terminated or truncated:
            break
    env.close()
    frames += [frames[-1]] * (fps // 2)  # hold the last frame for half a second
    iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0)
    return success
