"""PointMaze is a plain, deterministic Gymnasium goal env with clear argument errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import wmrobot.envs  # noqa: F401  (registers wmrobot/PointMaze-v0)
from wmrobot.envs import PointMazeEnv, eval_pairs, make_env
from wmrobot.envs.pointmaze import GOAL_RADIUS
from wmrobot.errors import EnvError

ENV_ID = "wmrobot/PointMaze-v0"


def rollout(env: gym.Env, seed: int, actions: np.ndarray) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    trajectory = [obs["observation"]]
    for a in actions:
        obs, *_ = env.step(a)
        trajectory.append(obs["observation"])
    return trajectory


@pytest.mark.parametrize("layout", ["ring", "open", "umaze"])
def test_passes_gymnasium_env_checker(layout):
    check_env(PointMazeEnv(layout=layout), skip_render_check=True)


def test_passes_stable_baselines3_env_checker():
    sb3_check_env(gym.make(ENV_ID).unwrapped, warn=False)


def test_same_seed_and_actions_give_identical_trajectories():
    actions = np.random.default_rng(0).uniform(-1, 1, size=(30, 2)).astype(np.float32)
    first = rollout(gym.make(ENV_ID), seed=7, actions=actions)
    second = rollout(gym.make(ENV_ID), seed=7, actions=actions)
    for a, b in zip(first, second, strict=True):
        assert a.tobytes() == b.tobytes()
    assert not np.array_equal(first[0], first[-1])  # the point did move


def test_different_seeds_draw_different_starts_and_goals():
    env = gym.make(ENV_ID)
    starts, goals = set(), set()
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        starts.add(obs["achieved_goal"].tobytes())
        goals.add(obs["desired_goal"].tobytes())
    assert len(starts) == 5 and len(goals) == 5


def test_options_pin_start_and_goal():
    env = gym.make(ENV_ID)
    obs, info = env.reset(seed=3, options={"start": [-1.0, -1.0], "goal": [1.0, 1.0]})
    np.testing.assert_allclose(obs["observation"], [-1.0, -1.0, 0.0, 0.0])
    np.testing.assert_allclose(obs["desired_goal"], [1.0, 1.0])
    assert info["distance"] == pytest.approx(np.sqrt(8), rel=1e-6)
    assert not info["is_success"]


def test_reward_is_minus_distance_and_success_terminates():
    env = gym.make(ENV_ID, layout="open")
    env.reset(seed=0, options={"start": [0.0, 0.0], "goal": [0.6, 0.0]})
    for _ in range(50):
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0], np.float32))
        assert reward == pytest.approx(-info["distance"])
        assert reward == pytest.approx(
            env.unwrapped.compute_reward(obs["achieved_goal"], obs["desired_goal"])
        )
        if terminated:
            break
    assert terminated and not truncated
    assert info["is_success"] and info["distance"] < GOAL_RADIUS


def test_physics_state_round_trip_replays_the_continuation():
    env = PointMazeEnv()
    env.reset(seed=1)
    push = np.array([0.7, -0.4], np.float32)
    for _ in range(5):
        env.step(push)
    state = env.get_physics_state()
    assert state.dtype == np.float64
    expected = [env.step(push)[0]["observation"] for _ in range(5)]

    env.reset(seed=99)  # somewhere else entirely
    env.set_physics_state(state)
    replayed = [env.step(push)[0]["observation"] for _ in range(5)]
    np.testing.assert_array_equal(np.stack(replayed), np.stack(expected))


def test_goal_observation_is_resting_at_the_goal():
    env = PointMazeEnv()
    np.testing.assert_array_equal(env.goal_observation([0.5, -1.0]), [0.5, -1.0, 0.0, 0.0])
    batch = env.goal_observation(np.zeros((3, 2)))
    assert batch.shape == (3, 4)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"layout": "spiral"}, "spiral"), ({"frame_skip": 0}, "frame_skip.*0")],
)
def test_bad_arguments_raise_env_error_naming_the_value(kwargs, named):
    with pytest.raises(EnvError, match=named):
        PointMazeEnv(**kwargs)
    with pytest.raises(EnvError, match=named):
        make_env(ENV_ID, kwargs)


def test_unsupported_render_mode_raises_env_error():
    with pytest.raises(EnvError, match="'depth'"):
        PointMazeEnv(render_mode="depth")


def test_make_env_rejects_unknown_ids_and_arguments():
    with pytest.raises(EnvError, match="NoSuchEnv-v0"):
        make_env("wmrobot/NoSuchEnv-v0")
    with pytest.raises(EnvError, match="colour"):
        make_env(ENV_ID, {"colour": "red"})
    assert make_env(ENV_ID, {"layout": "umaze"}).unwrapped.layout_name == "umaze"


def test_eval_pairs_are_fixed_for_a_seed():
    env = gym.make(ENV_ID)
    pairs = eval_pairs(env, 10, seed=1234)
    assert pairs == eval_pairs(gym.make(ENV_ID), 10, seed=1234)
    assert pairs != eval_pairs(env, 10, seed=1235)
    assert len(pairs) == 10
    obs, _ = env.reset(options=pairs[0])
    np.testing.assert_allclose(obs["achieved_goal"], pairs[0]["start"], atol=1e-6)
    np.testing.assert_allclose(obs["desired_goal"], pairs[0]["goal"], atol=1e-6)


def test_eval_pairs_respect_max_distance():
    env = gym.make(ENV_ID)
    far = eval_pairs(env, 20, seed=0)
    near = eval_pairs(env, 20, seed=0, max_distance=1.5)
    distance = [np.linalg.norm(np.subtract(p["goal"], p["start"])) for p in near]
    assert max(distance) <= 1.5 + 1e-3
    assert max(np.linalg.norm(np.subtract(p["goal"], p["start"])) for p in far) > 1.5
    with pytest.raises(EnvError, match="max_distance"):
        eval_pairs(env, 5, seed=0, max_distance=0.5)  # below min_goal_distance=1


@pytest.mark.parametrize("key", ["start", "goal"])
def test_reset_refuses_points_inside_walls(key):
    env = PointMazeEnv(layout="ring")
    with pytest.raises(EnvError, match=f"{key} \\[0.0, 0.0\\] is not a free point"):
        env.reset(seed=0, options={key: [0.0, 0.0]})  # the ring's central pillar
    assert env.is_free(np.array([1.0, 1.0]))
    assert not env.is_free(np.array([1.0, 1.9]))  # closer than the radius to the outer wall


def test_a_list_of_layouts_makes_the_maze_a_factor_of_variation():
    from wmrobot.envs.experts import make_expert

    env = gym.make(ENV_ID, layout=["ring", "umaze", "open"], factors={"maze": [0, 3]})
    expert = make_expert(env)
    seen = set()
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        expert.reset(np.random.default_rng(seed))
        base = env.unwrapped
        assert base.layout_name == ["ring", "umaze", "open"][int(info["factors"]["maze"])]
        seen.add(base.layout_name)
        # Each layout's own walls only: the others' are switched off.
        assert base.is_free(np.zeros(2)) == (base.layout_name == "open")
        assert base.is_free(np.array([-1.0, 0.0])) == (base.layout_name != "umaze")
        for _ in range(100):
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            if terminated or truncated:
                break
        assert info["is_success"], f"seed {seed} in {base.layout_name}"
    assert seen == {"ring", "umaze", "open"}
    held = gym.make(ENV_ID, layout=["ring", "umaze"], factors={"maze": 1})
    assert {held.reset(seed=s)[1]["factors"]["maze"] for s in range(3)} == {1.0}


def test_layouts_of_different_sizes_are_refused():
    with pytest.raises(EnvError, match="differ in size"):
        PointMazeEnv(layout=["umaze", "medium"])
