"""The collector's stepping path records exactly what a plain step-by-step loop reads: the
preallocated physics rows, the stacked observations and actions, episode after episode."""

from __future__ import annotations

import numpy as np
import pytest

from wmrobot.datasets.episodes import _physics_recorder, make_env_and_policy, run_episode
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


def test_physics_recorder_grows_past_its_first_capacity():
    env, policy = make_env_and_policy("HalfCheetah-v5", {}, PolicySpec("random"))
    env.reset(seed=0)
    policy.reset(np.random.default_rng(0))
    record, recorded = _physics_recorder(env, rows=2)
    expected = []
    for _ in range(7):  # past 2 rows, then past 4
        record()
        expected.append(get_physics_state(env))
        env.step(policy.act())
    env.close()
    assert recorded().shape == (7, len(expected[0]))
    np.testing.assert_array_equal(recorded(), np.stack(expected))
