"""The collector's stepping path records exactly what a plain step-by-step loop reads: the
observations, actions and physics states copied into rows set aside for them, episode after
episode."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from wmrobot.datasets.episodes import make_env_and_policy, run_episode
from wmrobot.datasets.policies import PolicySpec
from wmrobot.envs import get_physics_state


def plain_episode(env_id: str, kwargs: dict, seed: int) -> dict[str, np.ndarray]:
    """The reference: step the env, copy every observation and physics state as it comes."""
    env, policy = make_env_and_policy(env_id, kwargs, PolicySpec("random"))
    obs, _ = env.reset(seed=seed)
    policy.reset(np.random.default_rng(seed))
    observations, actions, physics = [obs], [], [get_physics_state(env)]
    while True:
        action = np.asarray(policy.act(obs), dtype=np.float32)
        obs, _, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        physics.append(get_physics_state(env))
        if terminated or truncated:
            break
    env.close()
    if isinstance(observations[0], dict):
        rows = {f"obs/{k}": np.stack([o[k] for o in observations]) for k in observations[0]}
    else:
        rows = {"obs": np.stack(observations)}
    return {**rows, "action": np.stack(actions), "physics": np.stack(physics)}


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("wmrobot/PointMaze-v0", {"layout": "open"}), ("HalfCheetah-v5", {"max_episode_steps": 50})],
)
def test_run_episode_rows_equal_a_plain_loop_over_several_episodes(env_id, kwargs):
    env, policy = make_env_and_policy(env_id, kwargs, PolicySpec("random"))
    # Several episodes from one env: an episode's rows must not change when the next runs.
    episodes = [run_episode(env, policy, seed) for seed in (5, 6, 7)]
    env.close()
    for seed, episode in zip((5, 6, 7), episodes, strict=True):
        expected = plain_episode(env_id, kwargs, seed)
        for key, rows in expected.items():
            got = episode[key][:-1] if key == "action" else episode[key]
            assert got.dtype == rows.dtype, key
            np.testing.assert_array_equal(got, rows, err_msg=f"{key}, seed {seed}")
        assert np.isnan(episode["action"][-1]).all()


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("wmrobot/PointMaze-v0", {"layout": "open"}), ("HalfCheetah-v5", {"max_episode_steps": 50})],
)
def test_rows_grow_past_their_first_capacity(env_id, kwargs):
    """An episode longer than the rows set aside (an env without a time limit) still records
    every observation, action and physics state: the arrays double, 2 -> 4 -> ... rows."""
    env, policy = make_env_and_policy(env_id, kwargs, PolicySpec())
    episode = run_episode(env, policy, seed=3, rows=2)
    env.close()
    expected = plain_episode(env_id, kwargs, seed=3)
    assert len(expected["action"]) > 4
    for key, rows in expected.items():
        got = episode[key][:-1] if key == "action" else episode[key]
        assert got.shape == rows.shape and got.dtype == rows.dtype, key
        np.testing.assert_array_equal(got, rows, err_msg=key)


def test_rows_are_copies_of_what_the_env_returns():
    """An env may hand back the same observation array each step, changed in place: the rows
    hold each step's values, not one array seen T+1 times."""

    class SameArray(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.buffer = np.zeros(env.observation_space.shape, env.observation_space.dtype)

        def observation(self, obs):
            self.buffer[:] = obs
            return self.buffer

    kwargs = {"max_episode_steps": 20}
    env, policy = make_env_and_policy("HalfCheetah-v5", kwargs, PolicySpec())
    episode = run_episode(SameArray(env), policy, seed=3)
    env.close()
    expected = plain_episode("HalfCheetah-v5", kwargs, seed=3)
    np.testing.assert_array_equal(episode["obs"], expected["obs"])


class _IntsThenFloats(gym.Env):
    """Resets to integer observations, steps to floats (a plain dict entry included)."""

    observation_space = gym.spaces.Dict(
        {"pos": gym.spaces.Box(-10, 10, (2,)), "t": gym.spaces.Box(0, 10, ())}
    )
    action_space = gym.spaces.Box(-1, 1, (2,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return {"pos": np.zeros(2, dtype=np.int64), "t": 0}, {}

    def step(self, action):
        self.t += 1
        obs = {"pos": np.array([0.25, 0.75]) * self.t, "t": 0.5 * self.t}
        return obs, 0.0, False, self.t == 3, {}


def test_a_step_observation_of_a_wider_dtype_than_the_reset_one_is_kept_whole():
    from wmrobot.datasets.policies import RandomPolicy

    env = _IntsThenFloats()
    episode = run_episode(env, RandomPolicy(env.action_space), seed=0, rows=4)
    np.testing.assert_array_equal(
        episode["obs/pos"], [[0, 0], [0.25, 0.75], [0.5, 1.5], [0.75, 2.25]]
    )
    np.testing.assert_array_equal(episode["obs/t"], [0, 0.5, 1.0, 1.5])
    assert episode["obs/pos"].dtype == episode["obs/t"].dtype == np.float64


def test_an_episode_that_ends_early_holds_only_its_own_rows():
    """Rows are set aside for the time limit; an episode that ends before it returns arrays
    of its own length, not views that keep every row set aside alive."""

    class EndsAtFive(gym.Wrapper):
        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.steps = getattr(self, "steps", 0) + 1
            return obs, reward, terminated or self.steps == 5, truncated, info

    env, policy = make_env_and_policy("HalfCheetah-v5", {"max_episode_steps": 50}, PolicySpec())
    episode = run_episode(EndsAtFive(env), policy, seed=3)
    env.close()
    for key in ("obs", "physics"):
        rows = episode[key]
        assert len(rows) == 6
        assert rows.base is None or rows.base.nbytes == rows.nbytes, key
