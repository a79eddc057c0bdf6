"""The task suite's observation modes for Gymnasium's own MuJoCo envs (HalfCheetah, Hopper,
Walker2d, Reacher, Pusher, InvertedPendulum, ...), for reward-driven planning and RL."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.wrappers import AddRenderObservation, FilterObservation

from wmrobot.envs.base import OBS_MODES
from wmrobot.errors import EnvError

# Gymnasium MuJoCo envs the suite is tested with; any other MujocoEnv id works the same way.
GYMNASIUM_MUJOCO = (
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Reacher-v5",
    "Pusher-v5",
    "InvertedPendulum-v5",
)


def is_ours(env_id: str) -> bool:
    return str(gym.registry[env_id].entry_point).startswith("wmrobot.")


def plain_rendering(model: Any) -> None:
    """Render a MuJoCo model without shadows, reflections or multisampling: the frames of the
    observation modes, and of a gym env collected with ``pixels=N``, so both look the same."""
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0
    model.vis.quality.offsamples = 0


def make_with_obs_mode(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    """A Gymnasium MuJoCo env in an observation mode: ``state`` (the env's own vector),
    ``pixels`` (a dict with ``pixels``, ``height x width x 3`` uint8) or ``state+pixels`` (a
    dict with ``state`` and ``pixels``). Frames come from the env's own camera, rendered
    offscreen without shadows, reflections or multisampling (a small software-GL frame costs
    several times more with them)."""
    kwargs = dict(kwargs)
    obs_mode = kwargs.pop("obs_mode", "state")
    width, height = kwargs.pop("width", 64), kwargs.pop("height", 64)
    if obs_mode not in OBS_MODES:
        raise EnvError(f"unknown obs_mode {obs_mode!r}; choose one of {list(OBS_MODES)}")
    if obs_mode == "state":
        return gym.make(env_id, **kwargs)
    if "render_mode" in kwargs:
        raise EnvError(f"obs_mode={obs_mode} renders its own frames; drop render_mode")
    env = gym.make(env_id, render_mode="rgb_array", width=width, height=height, **kwargs)
    model = getattr(env.unwrapped, "model", None)
    if model is None:
        env.close()
        raise EnvError(f"obs_mode={obs_mode} needs a MuJoCo env; {env_id!r} is not one")
    plain_rendering(model)
    env = AddRenderObservation(env, render_only=False, render_key="pixels", obs_key="state")
    # render_only=True would return a bare array; the suite's pixel mode is a dict, as ours.
    return FilterObservation(env, ["pixels"]) if obs_mode == "pixels" else env
