"""Push: the T moves only when pushed, its scripted expert solves the task, the scalar success
test agrees with the vectorised one bit for bit, and bad starts and goals are refused."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

from wmrobot.envs import eval_pairs
from wmrobot.envs.experts import make_expert
from wmrobot.envs.push import (
    ANGLE_TOLERANCE,
    MIN_SHIFT,
    MIN_TURN,
    POSITION_TOLERANCE,
    PUSHER_RADIUS,
    PushEnv,
    clearance,
)
from wmrobot.errors import EnvError

ENV_ID = "wmrobot/Push-v0"


def test_the_expert_solves_the_evaluation_pairs():
    env = gym.make(ENV_ID)  # 300 steps, the budget the expert is held to
    expert = make_expert(env)
    solved = 0
    # The first 10 of the 50 pairs the expert is measured on (it solves all 50).
    for index, pair in enumerate(eval_pairs(env, 10, seed=1234)):
        obs, _ = env.reset(seed=index, options=pair)
        expert.reset(np.random.default_rng(index))
        terminated = truncated = False
        while not (terminated or truncated):
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
        solved += info["is_success"]
    assert solved >= 9


def test_a_random_policy_does_not_solve_it():
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=0, options=eval_pairs(env, 1, seed=1234)[0])
    rng = np.random.default_rng(0)
    for _ in range(300):
        *_, terminated, truncated, info = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
    assert not info["is_success"]


def _drive(env: PushEnv, target: tuple[float, float]) -> np.ndarray:
    """One step of a stiff position servo on the pusher; returns the block's (x, y, θ)."""
    action = 10.0 * (np.asarray(target) - env.data.qpos[:2])
    env.step(action.clip(-1, 1).astype(np.float32))
    return env.data.qpos[2:5].copy()


def test_the_block_moves_only_when_pushed_and_stops_soon_after():
    env = PushEnv()
    start = [-0.3, -0.3, 0.1, 0.1, 0.4]  # pusher, block (x, y, θ)
    env.reset(seed=0, options={"start": start, "goal": [0.0, 0.0, 0.0]})
    # The pusher circles in its corner, never near the block: the block does not budge.
    for t in range(50):
        angle = 2 * math.pi * t / 20
        radius = 0.08 if t < 40 else 0.0  # and back to where it started
        pose = _drive(env, (-0.3 + radius * math.cos(angle), -0.3 + radius * math.sin(angle)))
        np.testing.assert_array_equal(pose, start[2:])
    # Pushed from the corner through its centre, it moves ...
    for _ in range(30):
        pose = _drive(env, (0.4, 0.4))
    assert np.linalg.norm(pose[:2] - start[2:4]) > 0.05
    # ... and once the pusher backs away it comes to rest within a few steps.
    for _ in range(6):
        pose = _drive(env, (-0.35, -0.35))
    resting = [_drive(env, (-0.35, -0.35)) for _ in range(5)]
    np.testing.assert_allclose(resting, [pose] * 5, atol=1e-4)
    assert np.abs(env.data.qvel[2:]).max() < 1e-3


def test_the_scalar_step_path_agrees_with_the_vectorised_distance_bit_for_bit():
    env = PushEnv()
    rng = np.random.default_rng(0)
    desired = rng.uniform(-0.3, 0.3, (2000, 4))
    heading = rng.uniform(-math.pi, math.pi, 2000)
    desired[:, 2], desired[:, 3] = np.cos(heading), np.sin(heading)
    # Half near the success boundary: position and angle errors around their tolerances.
    shift = rng.uniform(0.5, 1.5, 2000) * POSITION_TOLERANCE
    turn = heading + rng.choice([-1, 1], 2000) * rng.uniform(0.5, 1.5, 2000) * ANGLE_TOLERANCE
    direction = rng.uniform(-math.pi, math.pi, 2000)
    achieved = np.stack(
        [
            desired[:, 0] + shift * np.cos(direction),
            desired[:, 1] + shift * np.sin(direction),
            np.cos(turn),
            np.sin(turn),
        ],
        axis=1,
    )
    achieved[1000:] = rng.uniform(-1, 1, (1000, 4))
    achieved, desired = achieved.astype(np.float32), desired.astype(np.float32)
    distance = env.distance(achieved, desired)
    success = env.is_success(achieved, desired)
    assert 0.2 < success[:1000].mean() < 0.8  # the boundary cases do fall on both sides
    for a, d, dist, ok in zip(achieved, desired, distance, success, strict=True):
        scalar = env._evaluate(a, d)
        assert scalar == (dist, ok)
        assert scalar[0] == env.distance(a, d) and scalar[1] == env.is_success(a, d)


@pytest.mark.parametrize(
    ("shift", "degrees", "success"),
    [(0.019, 14.0, True), (0.021, 0.0, False), (0.0, 16.0, False), (0.0, -14.0, True)],
)
def test_success_needs_both_the_position_and_the_angle(shift, degrees, success):
    env = PushEnv()
    turn = math.radians(degrees)
    achieved = np.array([0.1 + shift, 0.0, math.cos(turn), math.sin(turn)], np.float32)
    assert bool(env.is_success(achieved, np.array([0.1, 0.0, 1.0, 0.0], np.float32))) is success


def test_drawn_starts_are_free_and_goals_need_pushing():
    env = PushEnv()
    rng = np.random.default_rng(0)
    for _ in range(200):
        start, goal = env.sample_start_goal(rng)
        assert clearance(start[:2], *start[2:]) > PUSHER_RADIUS
        turn = abs(math.remainder(goal[2] - start[4], 2 * math.pi))
        assert np.linalg.norm(goal[:2] - start[2:4]) >= MIN_SHIFT or turn >= MIN_TURN
        obs, info = env.reset(seed=0, options={"start": start, "goal": goal})
        assert not info["is_success"]
        np.testing.assert_allclose(obs["observation"][[0, 1, 4, 5]], start[:4], atol=1e-6)
        # The target marker is drawn at the goal.
        np.testing.assert_allclose(env.data.body("target").xpos[:2], goal[:2])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("start", [0.0, 0.0, 0.2], r"start \[0.0, 0.0, 0.2\] must be 5 finite numbers"),
        ("start", [-0.3, -0.3, 0.0, math.nan, 0.0], "start .*nan.* must be 5 finite"),
        ("goal", [0.1, 0.1], r"goal \[0.1, 0.1\] must be 3 finite numbers"),
        ("start", [0.0, 0.05, 0.0, 0.0, 0.0], r"start .* puts the pusher inside the block"),
        ("start", [0.44, 0.0, 0.1, 0.1, 0.0], r"start pusher \[0.44, 0.0\] is outside"),
        ("start", [-0.3, -0.3, 0.4, 0.0, 0.0], r"start block pose \[0.4, 0.0, 0.0\] puts"),
        ("goal", [0.0, -0.4, 1.0], r"goal block pose \[0.0, -0.4, 1.0\] puts the T outside"),
    ],
)
def test_bad_starts_and_goals_are_refused_in_one_line(key, value, message):
    env = PushEnv()
    with pytest.raises(EnvError, match=message) as err:
        env.reset(seed=0, options={key: value})
    assert "\n" not in str(err.value)
