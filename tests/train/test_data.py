"""The trainer's data: a model built for a dataset, and datasets refused in one line."""

from __future__ import annotations

import pytest

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.errors import ConfigError, DatasetError
from wmrobot.model import ModelConfig
from wmrobot.train.data import build_model, check_compatible


def tiny_model(**changes) -> ModelConfig:
    return ModelConfig(
        latent_dim=8, hidden=16, depth=1, goal_dim=3, ema=0.9, latent_weight=0.5,
        cost_weight=1.0, **changes,
    )  # fmt: skip


def test_a_dataset_of_another_task_is_refused_in_one_line(maze_dataset, tmp_path):
    other = tmp_path / "reacher.zarr"
    collect(str(other), "wmrobot/Reacher-v0", episodes=2, seed=0, progress=False)
    model = build_model(EpisodeStore.open(maze_dataset), tiny_model())
    check_compatible(model, EpisodeStore.open(maze_dataset))  # its own data passes
    with pytest.raises(DatasetError) as err:
        check_compatible(model, EpisodeStore.open(other))
    assert "\n" not in str(err.value) and "observation size" in str(err.value)


def test_pixel_encoders_refuse_a_dataset_without_pixels(maze_dataset):
    with pytest.raises(ConfigError, match="pixels=64"):
        build_model(EpisodeStore.open(maze_dataset), tiny_model(encoder="cnn"))
