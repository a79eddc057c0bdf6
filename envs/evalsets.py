"""Making envs by id with clear errors, and fixed, seeded start/goal sets for honest evaluation."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from wmrobot.errors import EnvError


def make_env(env_id: str, kwargs: dict[str, Any] | None = None, **extra: Any) -> gym.Env:
    """``gym.make`` that turns an unknown id or argument into one clear :class:`EnvError`."""
    import wmrobot.envs  # noqa: F401  (registers our ids)

    kwargs = {**(kwargs or {}), **extra}
    if env_id not in gym.registry:
        ours = sorted(k for k in gym.registry if k.startswith("wmrobot/"))
        raise EnvError(f"unknown env id {env_id!r}; wmrobot's are {ours}, or any gymnasium id")
    try:
        return gym.make(env_id, **kwargs)
    except TypeError as e:
        raise EnvError(f"bad arguments {kwargs} for env {env_id!r}: {e}") from None


def eval_pairs(
    env: gym.Env, n: int, seed: int, max_distance: float | None = None
) -> list[dict[str, list[float]]]:
    """``n`` start/goal pairs drawn with ``seed``: the same list on every machine and run.

    ``max_distance`` keeps only pairs whose goal is that close to the start (an easy set).
    Each pair is a reset ``options`` dict: ``env.reset(options=pair)``.
    """
    base = env.unwrapped
    if not hasattr(base, "sample_start_goal"):
        raise EnvError(f"env {env.spec.id if env.spec else base!r} is not goal-conditioned")
    rng = np.random.default_rng(seed)
    pairs: list[dict[str, list[float]]] = []
    for _ in range(1000 * n):
        if len(pairs) == n:
            break
        start, goal = base.sample_start_goal(rng)
        if max_distance is None or np.linalg.norm(goal - start) <= max_distance:
            pairs.append({"start": start.round(4).tolist(), "goal": goal.round(4).tolist()})
    if len(pairs) < n:
        raise EnvError(f"could not draw {n} start/goal pairs within max_distance={max_distance}")
    return pairs
