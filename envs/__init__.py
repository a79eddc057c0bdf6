"""MuJoCo tasks for wmrobot, registered as plain Gymnasium envs under ``wmrobot/<Name>-v0``."""

from __future__ import annotations

import os

# Offscreen rendering without a display; must be set before mujoco creates a GL context.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402

from wmrobot.envs.evalsets import eval_pairs, make_env  # noqa: E402
from wmrobot.envs.physics import get_physics_state, has_physics, set_physics_state  # noqa: E402
from wmrobot.envs.pointmaze import PointMazeEnv  # noqa: E402

__all__ = [
    "PointMazeEnv",
    "eval_pairs",
    "get_physics_state",
    "has_physics",
    "make_env",
    "set_physics_state",
]

if "wmrobot/PointMaze-v0" not in gym.registry:
    gym.register(
        id="wmrobot/PointMaze-v0",
        entry_point="wmrobot.envs.pointmaze:PointMazeEnv",
        max_episode_steps=100,
    )
