"""Making envs by id, with one clear error for an unknown id or argument."""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import mujoco

from wmrobot.envs.wrappers import is_ours, make_with_obs_mode
from wmrobot.errors import EnvError


def make_env(env_id: str, kwargs: dict[str, Any] | None = None, **extra: Any) -> gym.Env:
    """``gym.make`` that turns an unknown id or argument into one clear :class:`EnvError`."""
    kwargs = {**(kwargs or {}), **extra}
    _log_mujoco_warnings()
    if env_id not in gym.registry:
        ours = sorted(k for k in gym.registry if k.startswith("wmrobot/"))
        raise EnvError(f"unknown env id {env_id!r}; wmrobot's are {ours}, or any gymnasium id")
    try:
        if "obs_mode" in kwargs and not is_ours(env_id):
            return make_with_obs_mode(env_id, kwargs)
        return gym.make(env_id, **kwargs)
    except TypeError as e:
        raise EnvError(f"bad arguments {kwargs} for env {env_id!r}: {e}") from None


_MUJOCO_LOG = logging.getLogger("mujoco")
_MUJOCO_SEEN: set[str] = set()


def _log_mujoco_warnings() -> None:
    """Send MuJoCo's warnings (Gymnasium's HalfCheetah model, say, uses a compiler attribute
    MuJoCo deprecates) to the ``mujoco`` logger: by default MuJoCo prints them on stderr and
    appends them to ``MUJOCO_LOG.TXT`` in the working directory. Each text is logged once
    (a model's warnings repeat at every compile); a handler someone else installed is left
    in place."""
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_log_once)


def _log_once(text: str) -> None:
    if text not in _MUJOCO_SEEN:
        _MUJOCO_SEEN.add(text)
        _MUJOCO_LOG.warning("%s", text.strip())
