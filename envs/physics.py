"""The full MuJoCo physics state of any MuJoCo-backed Gymnasium env: read, write, detect."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np

FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS
# The same signature as a plain int: the bindings convert it several times faster than the enum,
# which counts where the collector reads the state every step.
FULL_SIGNATURE = int(FULL)


def model_data(env: gym.Env) -> tuple[mujoco.MjModel, mujoco.MjData] | None:
    """The env's ``MjModel`` and ``MjData``, or None for an env that does not run on MuJoCo."""
    base = env.unwrapped
    model, data = getattr(base, "model", None), getattr(base, "data", None)
    if isinstance(model, mujoco.MjModel) and isinstance(data, mujoco.MjData):
        return model, data
    return None


def has_physics(env: gym.Env) -> bool:
    """Whether ``env`` runs on MuJoCo (wmrobot tasks and gymnasium's MujocoEnv do)."""
    return model_data(env) is not None


def get_physics_state(env: gym.Env) -> np.ndarray:
    """``mjSTATE_FULLPHYSICS`` of the env's ``MjData`` (time, qpos, qvel, act, ...), float64."""
    model, data = model_data(env)
    state = np.empty(mujoco.mj_stateSize(model, FULL))
    mujoco.mj_getState(model, data, state, FULL)
    return state


def set_physics_state(env: gym.Env, state: np.ndarray) -> None:
    """Restore a state from :func:`get_physics_state` and recompute derived quantities."""
    model, data = model_data(env)
    expected = mujoco.mj_stateSize(model, FULL)
    if np.shape(state) != (expected,):
        raise ValueError(
            f"physics state has shape {np.shape(state)}, this model needs ({expected},)"
        )
    mujoco.mj_setState(model, data, np.asarray(state, dtype=np.float64), FULL)
    mujoco.mj_forward(model, data)
