"""Spaces described in plain JSON in a dataset's attributes, rebuilt exactly."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from wmrobot.datasets import EpisodeStore
from wmrobot.datasets.spaces import space_from_json, space_to_json


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Box(-np.inf, np.inf, (17,), np.float64),
        gym.spaces.Box(np.float32([-1.0, 0.0]), np.float32([1.0, np.inf]), dtype=np.float32),
        gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
        gym.spaces.Dict(
            {"observation": gym.spaces.Box(-1, 1, (4,)), "goal": gym.spaces.Discrete(3, start=1)}
        ),
        gym.spaces.Tuple([gym.spaces.MultiDiscrete([2, 3]), gym.spaces.MultiBinary(4)]),
    ],
)
def test_spaces_round_trip_through_json(space):
    data = json.loads(json.dumps(space_to_json(space)))  # as the attributes store it
    assert space_from_json(data) == space


def test_collected_dataset_records_its_spaces_exactly(maze_dataset):
    import wmrobot.envs  # noqa: F401

    spaces = EpisodeStore.open(maze_dataset).attrs["spaces"]
    env = gym.make("wmrobot/PointMaze-v0")
    assert space_from_json(spaces["observation_space"]) == env.observation_space
    assert space_from_json(spaces["action_space"]) == env.action_space
