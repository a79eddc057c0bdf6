"""Gymnasium spaces to and from plain JSON, so a dataset describes its spaces exactly
without pickling (Box, Discrete, MultiDiscrete, MultiBinary, and Dict/Tuple of those)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from wmrobot.errors import DatasetError


def _array(values: np.ndarray) -> list[Any]:
    # JSON has no infinities: they are written as strings, which np.asarray reads back.
    out = values.astype(object)
    out[np.isposinf(values)] = "inf"
    out[np.isneginf(values)] = "-inf"
    return out.tolist()


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A JSON-ready description of ``space`` that :func:`space_from_json` rebuilds exactly."""
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _array(space.low.astype(np.float64)),
            "high": _array(space.high.astype(np.float64)),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(s) for s in space.spaces]}
    raise DatasetError(f"cannot describe a {type(space).__name__} space in a dataset")


def space_from_json(data: dict[str, Any]) -> gym.Space:
    """The space :func:`space_to_json` described."""
    kind = data.get("type")
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        low = np.asarray(data["low"], dtype=np.float64).astype(dtype)
        high = np.asarray(data["high"], dtype=np.float64).astype(dtype)
        return gym.spaces.Box(low, high, tuple(data["shape"]), dtype)
    if kind == "Discrete":
        return gym.spaces.Discrete(data["n"], start=data.get("start", 0))
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(data["nvec"])
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return gym.spaces.Dict({k: space_from_json(v) for k, v in data["spaces"].items()})
    if kind == "Tuple":
        return gym.spaces.Tuple([space_from_json(v) for v in data["spaces"]])
    raise DatasetError(f"unknown space type {kind!r} in a dataset's spaces")


def describe_spaces(observation: gym.Space, action: gym.Space) -> dict[str, Any]:
    """A dataset's ``spaces`` attribute: reprs (compared on resume), the action bounds, and
    the exact JSON descriptions."""
    return {
        "observation": repr(observation),
        "action": repr(action),
        "action_low": action.low.tolist(),
        "action_high": action.high.tolist(),
        "observation_space": space_to_json(observation),
        "action_space": space_to_json(action),
    }
