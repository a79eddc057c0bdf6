"""Replay and restore: the recorded physics state and actions re-create the recorded episode."""

from __future__ import annotations

import numpy as np
import pytest

from wmrobot.datasets import EpisodeStore, collect, replay, restore
from wmrobot.datasets.policies import PolicySpec
from wmrobot.datasets.replay import env_for
from wmrobot.envs import TASKS


@pytest.fixture(scope="module")
def cheetah(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "cheetah.zarr"
    collect(str(path), "HalfCheetah-v5", {"max_episode_steps": 60}, episodes=2, progress=False)
    return EpisodeStore.open(path)


@pytest.fixture(scope="module")
def maze(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "maze.zarr"
    collect(
        str(path), "wmrobot/PointMaze-v0", policy=PolicySpec(beta=1.0), episodes=3, progress=False
    )
    return EpisodeStore.open(path)


@pytest.mark.parametrize("name", ["maze", "cheetah"])
def test_replay_reproduces_recorded_observations_exactly(name, request):
    store = request.getfixturevalue(name)
    for episode in range(store.n_episodes):
        result = replay(store, episode)
        assert result.steps == store.meta("length")[episode]
        assert result.exact, result.max_abs_diff


def test_physics_rows_are_full_mujoco_states(cheetah):
    env = env_for(cheetah)
    base = env.unwrapped
    # time, qpos, qvel (+ act, ...): HalfCheetah has 9 qpos and 9 qvel
    assert cheetah.array("physics").shape[1] >= 1 + base.model.nq + base.model.nv
    times = cheetah.episode(0, ["physics"])["physics"][:, 0]
    np.testing.assert_allclose(np.diff(times), base.dt)


def test_restore_branches_a_counterfactual_from_any_row(maze):
    env = env_for(maze)
    row = 20  # inside the first episode
    recorded = maze.episode(0)
    restore(env, maze, row)
    obs = env.unwrapped.step(recorded["action"][row])[0]
    np.testing.assert_array_equal(obs["observation"], recorded["obs/observation"][row + 1])
    # the same state with another action goes elsewhere
    restore(env, maze, row)
    other = env.unwrapped.step(-recorded["action"][row])[0]
    assert not np.array_equal(other["observation"], obs["observation"])


def test_restore_refuses_rows_past_the_commit(maze):
    with pytest.raises(IndexError, match="out of range"):
        restore(env_for(maze), maze, maze.n_rows)


@pytest.mark.parametrize("env_id", sorted(TASKS))
def test_every_task_collects_with_its_expert_and_replays_exactly(tmp_path, env_id):
    path = tmp_path / "task.zarr"
    factors = {"mass": [0.8, 1.2], "hue": [-0.2, 0.2]}  # drawn per episode, pinned on replay
    collect(str(path), env_id, {"factors": factors}, policy="expert", episodes=2, progress=False)
    store = EpisodeStore.open(path)
    assert store.meta("success").all()
    assert len(set(store.meta("factors")[:, store.factor_names.index("mass")])) == 2
    for episode in range(2):
        assert replay(store, episode).exact


def test_pixel_observations_replay_exactly(tmp_path):
    path = tmp_path / "pixels.zarr"
    kwargs = {"obs_mode": "state+pixels", "width": 24, "height": 24}
    collect(str(path), "wmrobot/TwoRoom-v0", kwargs, policy="expert", episodes=1, progress=False)
    store = EpisodeStore.open(path)
    assert store.array("obs/pixels").shape[1:] == (24, 24, 3)
    assert {"obs/pixels", "obs/goal_pixels"} <= set(store.keys)
    assert replay(store, 0).exact
