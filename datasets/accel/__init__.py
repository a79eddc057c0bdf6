"""The collector's optional acceleration layer: open-loop episodes simulated in batches by
``mujoco.rollout`` (``rollout.py``) and a local dataset's chunks written without zarr
(``chunks.py``, ``store.py``).

The collector reaches it through :func:`accelerate` alone: deleting this package and that one
call leaves the plain path (workers stepping the env, one writer, zarr's API) whole. Tests
hold both paths to the same datasets.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

import gymnasium as gym

from wmrobot.datasets.accel.rollout import rollout_episodes, unsupported_reason
from wmrobot.datasets.accel.store import DirectStore
from wmrobot.datasets.policies import PolicySpec
from wmrobot.datasets.store import is_local
from wmrobot.errors import DatasetError

Route = TypeVar("Route")  # the collector's Route: a dataclass of how episodes are made and written


def accelerate(
    route: Route,
    fast: bool | None,
    env: gym.Env,
    env_id: str,
    env_kwargs: dict[str, Any],
    policy: PolicySpec,
    pixels: int | None,
    path: str,
    workers: int,
) -> Route:
    """The plain ``route`` with this layer's pieces wherever they apply (``fast=None``), none
    of them (``False``), or refused in one line where the rollout cannot apply (``True``)."""
    if fast is False:
        return route
    reason = unsupported_reason(env, policy, pixels)
    if fast and reason:
        raise DatasetError(f"fast=True cannot collect this: {reason}; collect with fast=False")
    changes: dict[str, Any] = {}
    if is_local(path):
        changes["store"] = DirectStore
    if reason is None:
        # mujoco.rollout simulates without the GIL: this process steps nothing in Python.
        episodes = functools.partial(rollout_episodes, env_id, env_kwargs, policy, threads=workers)
        changes.update(episodes=episodes, steps_here=False, simulation="mujoco.rollout")
    return dataclasses.replace(route, **changes)  # type: ignore[type-var]
