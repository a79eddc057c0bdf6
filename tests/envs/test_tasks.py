"""Every registered wmrobot task is a plain, seeded Gymnasium goal env in every observation mode,
with factors of variation that change what the camera sees and arguments refused clearly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from wmrobot.envs import TASKS, make_env
from wmrobot.envs.base import OBS_MODES
from wmrobot.errors import EnvError

IDS = sorted(TASKS)


@pytest.mark.parametrize("obs_mode", OBS_MODES)
@pytest.mark.parametrize("env_id", IDS)
def test_passes_the_gymnasium_and_sb3_env_checkers(env_id, obs_mode):
    env = gym.make(env_id, obs_mode=obs_mode, width=32, height=32).unwrapped
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    obs, _ = env.reset(seed=0)
    assert ("pixels" in obs) == ("pixels" in obs_mode)
    assert ("observation" in obs) == ("state" in obs_mode)
    env.close()


def _episode(env_id: str, seed: int, steps: int = 20, **kwargs) -> list[bytes]:
    env = gym.make(env_id, obs_mode="state+pixels", width=32, height=32, **kwargs)
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    record = [b"".join(v.tobytes() for v in obs.values()), repr(info["factors"]).encode()]
    space = env.action_space
    for _ in range(steps):
        action = rng.uniform(space.low, space.high).astype(np.float32)
        obs, reward, terminated, truncated, _ = env.step(action)
        record.append(b"".join(v.tobytes() for v in obs.values()) + np.float64(reward).tobytes())
        record.append(env.unwrapped.get_physics_state().tobytes())
        if terminated or truncated:
            break
    env.close()
    return record


WIDE = {"mass": [0.5, 2.0], "hue": [-0.5, 0.5], "light": [0.4, 1.6], "camera_x": [-0.1, 0.1]}


@pytest.mark.parametrize("env_id", IDS)
def test_the_same_seed_gives_the_same_episode_bit_for_bit(env_id):
    first = _episode(env_id, seed=11, factors=WIDE)
    assert first == _episode(env_id, seed=11, factors=WIDE)
    assert first[:2] != _episode(env_id, seed=12, factors=WIDE)[:2]


@pytest.mark.parametrize("env_id", IDS)
def test_holding_a_factor_fixed_leaves_the_others_draws_unchanged(env_id):
    env = gym.make(env_id)
    _, free = env.reset(seed=3)
    env = gym.make(env_id, factors={"mass": [0.5, 2.0]})
    _, varied = env.reset(seed=3)
    assert varied["factors"]["mass"] != 1.0
    same = {k: v for k, v in free["factors"].items() if k != "mass"}
    assert same == {k: v for k, v in varied["factors"].items() if k != "mass"}


def _frame(env_id: str, **factors) -> np.ndarray:
    env = gym.make(env_id, obs_mode="pixels", width=48, height=48)
    obs, _ = env.reset(seed=0, options={"factors": factors})
    env.close()
    return obs["pixels"].astype(np.float64)


@pytest.mark.parametrize("env_id", IDS)
def test_visual_factors_change_the_frames(env_id):
    nominal = _frame(env_id)
    assert np.array_equal(nominal, _frame(env_id))  # rendering itself is deterministic
    # Light scales the brightness; floor changes the background; hue the moving parts' colour;
    # a camera shift moves the whole picture.
    assert _frame(env_id, light=0.4).mean() < nominal.mean() - 5
    assert _frame(env_id, floor=0.4).mean() < nominal.mean() - 5
    hue = _frame(env_id, hue=0.5)
    assert np.abs(hue - nominal).max() > 60 and (np.abs(hue - nominal).sum(-1) > 0).mean() < 0.5
    assert np.abs(_frame(env_id, camera_x=0.15) - nominal).mean() > 5


@pytest.mark.parametrize("env_id", IDS)
def test_the_goal_image_shows_the_goal_configuration(env_id):
    env = gym.make(env_id, obs_mode="pixels", width=48, height=48)
    obs, _ = env.reset(seed=1)
    base = env.unwrapped
    before = base.get_physics_state()
    assert obs["goal_pixels"].shape == obs["pixels"].shape
    assert not np.array_equal(obs["goal_pixels"], obs["pixels"])
    np.testing.assert_array_equal(base.render_goal(), obs["goal_pixels"])
    np.testing.assert_array_equal(base.get_physics_state(), before)  # left as it was
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_without_the_goal_marker_the_frames_do_not_depend_on_the_goal(env_id):
    frames = {}
    for show in (True, False):
        env = gym.make(env_id, obs_mode="pixels", width=48, height=48, show_goal=show)
        start, goal = env.unwrapped.sample_start_goal(np.random.default_rng(0))
        other = env.unwrapped.sample_start_goal(np.random.default_rng(1))[1]
        for name, g in (("goal", goal), ("other", other)):
            obs, _ = env.reset(seed=0, options={"start": start, "goal": g})
            frames[show, name] = obs["pixels"], obs["goal_pixels"]
        env.close()
    # With the marker the frame shows where the goal is; without it the goal image alone does.
    assert not np.array_equal(frames[True, "goal"][0], frames[True, "other"][0])
    np.testing.assert_array_equal(frames[False, "goal"][0], frames[False, "other"][0])
    assert not np.array_equal(frames[False, "goal"][1], frames[False, "other"][1])
    assert not np.array_equal(frames[False, "goal"][0], frames[True, "goal"][0])


@pytest.mark.parametrize("env_id", IDS)
def test_reward_is_compute_reward_and_goal_observation_has_the_state_shape(env_id):
    env = gym.make(env_id)
    obs, _ = env.reset(seed=2)
    base = env.unwrapped
    obs, reward, *_, info = env.step(env.action_space.sample())
    assert reward == base.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
    goal_obs = base.goal_observation(obs["desired_goal"])
    assert goal_obs.shape == obs["observation"].shape
    batch = base.goal_observation(np.stack([obs["desired_goal"]] * 3))
    assert batch.shape == (3, *obs["observation"].shape)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"obs_mode": "rgb"}, "unknown obs_mode 'rgb'"),
        ({"factors": {"mass": [2.0, 1.0]}}, r"mass range \[2.0, 1.0\] has min > max"),
        ({"factors": {"gravity": 1.0}}, "unknown factor 'gravity'"),
        ({"factors": {"mass": [0.0, 1.0]}}, "outside its bounds"),
        ({"factors": {"mass": "heavy"}}, "must be a number or a"),
        ({"width": 2}, "width=2"),
        ({"frame_skip": 0}, "frame_skip"),
    ],
)
@pytest.mark.parametrize("env_id", IDS)
def test_bad_arguments_are_refused_in_one_line(env_id, kwargs, message):
    with pytest.raises(EnvError, match=message) as err:
        make_env(env_id, kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("env_id", IDS)
def test_bad_reset_options_are_refused_in_one_line(env_id):
    env = gym.make(env_id)
    with pytest.raises(EnvError, match="unknown reset options"):
        env.reset(seed=0, options={"goals": [0, 0]})
    with pytest.raises(EnvError, match="factor"):
        env.reset(seed=0, options={"factors": {"mass": 100.0}})


@pytest.mark.parametrize("env_id", IDS)
def test_step_before_reset_is_refused(env_id):
    from gymnasium.error import ResetNeeded

    env = gym.make(env_id)
    with pytest.raises(ResetNeeded, match="reset"):
        env.step(env.action_space.sample())
