"""Reacher: a two-link arm whose scripted expert reaches position and pose goals, whose goal
observation inverts the kinematics, and whose scalar step path matches the vectorised one."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from wmrobot.envs import make_env
from wmrobot.envs.experts import make_expert
from wmrobot.envs.reacher import (
    MAX_SPEED,
    POSE_TOLERANCE,
    POSITION_TOLERANCE,
    ReacherEnv,
    fingertip,
    inverse_kinematics,
)
from wmrobot.errors import EnvError

IDS = {"position": "wmrobot/Reacher-v0", "pose": "wmrobot/ReacherPose-v0"}
BUDGET = 50  # steps (2 s); the expert needs at most about 25 on these pairs


@pytest.mark.parametrize("target", sorted(IDS))
def test_the_expert_reaches_the_goals_of_the_evaluation_pairs(target):
    env = gym.make(IDS[target])
    expert = make_expert(env)
    rng = np.random.default_rng(1234)
    pairs = [env.unwrapped.sample_start_goal(rng) for _ in range(50)]
    successes = 0
    for index, (start, goal) in enumerate(pairs):
        obs, _ = env.reset(seed=index, options={"start": start, "goal": goal})
        expert.reset(np.random.default_rng(index))
        for _ in range(BUDGET):
            obs, _, terminated, _, info = env.step(expert.act(obs))
            if terminated:
                break
        successes += info["is_success"]
    assert successes >= 45  # 90%; it reaches all 50 at nominal factors


@pytest.mark.parametrize("target", sorted(IDS))
def test_the_goal_observation_is_the_arm_resting_at_the_goal(target):
    env = gym.make(IDS[target])
    base = env.unwrapped
    for seed in range(5):
        _, goal = base.sample_start_goal(np.random.default_rng(seed))
        obs, info = env.reset(options={"start": goal, "goal": goal})
        assert info["is_success"]
        np.testing.assert_allclose(
            base.goal_observation(obs["desired_goal"]), obs["observation"], atol=1e-5
        )


def test_inverse_kinematics_puts_the_fingertip_on_the_desired_goal():
    env = ReacherEnv()
    rng = np.random.default_rng(0)
    # Reachable points: the elbow's limit leaves a small hole around the shoulder.
    angle, radius = rng.uniform(-np.pi, np.pi, 100), rng.uniform(0.05, 0.215, 100)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], -1).astype(np.float32)
    observation = env.goal_observation(points)
    assert observation.shape == (100, 8)
    np.testing.assert_allclose(observation[:, 6:], points, atol=1e-5)
    np.testing.assert_array_equal(observation[:, 4:6], 0.0)  # resting
    q = inverse_kinematics(points)
    assert (q[:, 1] >= 0).all()  # the documented elbow branch
    np.testing.assert_allclose(fingertip(q[:, 0], q[:, 1]), points, atol=1e-6)
    # The other branch reaches the same points with the elbow bent the other way.
    q = inverse_kinematics(points, elbow=-1.0)
    assert (q[:, 1] <= 0).all()
    np.testing.assert_allclose(fingertip(q[:, 0], q[:, 1]), points, atol=1e-6)


@pytest.mark.parametrize("target", ["position", "pose"])
def test_the_scalar_step_path_matches_distance_and_is_success_bit_for_bit(target):
    env = ReacherEnv(target=target)
    rng = np.random.default_rng(0)
    size = env.observation_space["desired_goal"].shape[0]
    desired = rng.uniform(-0.2, 0.2, (500, size)).astype(np.float32)
    # Offsets around the success threshold, so both outcomes occur.
    scale = POSITION_TOLERANCE if target == "position" else POSE_TOLERANCE
    achieved = (desired + rng.normal(0, scale, (500, size))).astype(np.float32)
    distance = env.distance(achieved, desired)
    success = env.is_success(achieved, desired)
    assert 0 < success.sum() < 500 and distance.dtype == np.float64
    for a, d, dist, ok in zip(achieved, desired, distance, success, strict=True):
        got = env._evaluate(a, d)
        assert got[0] == dist and got[1] == ok
        assert env.distance(a, d) == dist  # one row rounds as a batch does


def test_pose_success_needs_both_joints_within_the_tolerance():
    env = ReacherEnv(target="pose")

    def pose(q1, q2):
        return np.array([np.cos(q1), np.sin(q1), np.cos(q2), np.sin(q2)], np.float32)

    goal = pose(1.0, -0.5)
    assert env.is_success(pose(1.09, -0.41), goal)
    assert not env.is_success(pose(1.0, -0.5 + 1.1 * POSE_TOLERANCE), goal)
    assert not env.is_success(pose(1.0 - 1.1 * POSE_TOLERANCE, -0.5), goal)
    assert not env.is_success(pose(1.0 + 2 * np.pi - 0.2, -0.5), goal)
    assert env.is_success(pose(1.0 + 2 * np.pi, -0.5), goal)  # a full turn is the same pose


def test_speeds_stay_inside_the_observation_bounds_at_the_strongest_factors():
    env = ReacherEnv(factors={"gear": 5.0, "damping": 0.1, "mass": 0.2})
    obs, _ = env.reset(seed=0)
    space = env.observation_space
    fastest = 0.0
    for _ in range(100):
        obs, *_ = env.step(np.ones(2, np.float32))
        assert space.contains(obs)
        fastest = max(fastest, np.abs(obs["observation"][4:6]).max())
    assert fastest == MAX_SPEED  # the physics went past the bound; the observation is clipped


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"start": [0.0, 3.0]}, r"start \[0.0, 3.0\] is not a Reacher configuration"),
        ({"goal": [0.0, np.nan]}, r"goal \[0.0, nan\] is not a Reacher configuration"),
        ({"goal": [0.1, 0.2, 0.3]}, r"goal \[0.1, 0.2, 0.3\] is not a Reacher configuration"),
    ],
)
def test_reset_refuses_configurations_the_arm_cannot_take(options, named):
    env = ReacherEnv()
    with pytest.raises(EnvError, match=named) as err:
        env.reset(seed=0, options=options)
    assert "\n" not in str(err.value)


def test_an_unknown_target_is_refused_in_one_line():
    with pytest.raises(EnvError, match=r"unknown Reacher target 'angle'.*'position', 'pose'"):
        ReacherEnv(target="angle")
    with pytest.raises(EnvError, match="'angle'") as err:
        make_env("wmrobot/Reacher-v0", {"target": "angle"})
    assert "\n" not in str(err.value)
    assert make_env("wmrobot/ReacherPose-v0").unwrapped.target == "pose"
