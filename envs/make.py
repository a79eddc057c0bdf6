"""Making envs by id, with one clear error for an unknown id or argument."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from wmrobot.envs.wrappers import is_ours, make_with_obs_mode, plain_rendering
from wmrobot.errors import EnvError


def episode_length(env_id: str, kwargs: dict[str, Any] | None = None) -> int | None:
    """The env's time limit: its ``max_episode_steps`` argument, else the registered one;
    None for an id without one (or not registered)."""
    steps = (kwargs or {}).get("max_episode_steps")
    if not steps and env_id in gym.registry:
        steps = gym.spec(env_id).max_episode_steps
    return int(steps) if steps else None


def make_env(env_id: str, kwargs: dict[str, Any] | None = None, **extra: Any) -> gym.Env:
    """``gym.make`` that turns an unknown id or argument into one clear :class:`EnvError`."""
    kwargs = {**(kwargs or {}), **extra}
    if env_id not in gym.registry:
        ours = sorted(k for k in gym.registry if k.startswith("wmrobot/"))
        raise EnvError(f"unknown env id {env_id!r}; wmrobot's are {ours}, or any gymnasium id")
    try:
        if "obs_mode" in kwargs and not is_ours(env_id):
            env = make_with_obs_mode(env_id, kwargs)
        else:
            env = gym.make(env_id, **kwargs)
    except TypeError as e:
        raise EnvError(f"bad arguments {kwargs} for env {env_id!r}: {e}") from None
    if kwargs.get("render_mode") == "rgb_array" and not is_ours(env_id):
        model = getattr(env.unwrapped, "model", None)
        if model is not None:  # as the observation modes render (datasets' pixels=N)
            plain_rendering(model)
    if not isinstance(env.action_space, gym.spaces.Box):
        # The policies, models and planners all act in a continuous action box.
        env.close()
        raise EnvError(
            f"env {env_id!r} has {env.action_space} actions; wmrobot takes Box (continuous) "
            f"actions only: choose a continuous-control env (e.g. Pendulum-v1 for CartPole-v1)"
        )
    return env
