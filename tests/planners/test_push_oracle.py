"""benchmarks/push_oracle.py's simulator-as-model: its rollouts are the env's own steps and its
cost is the task's distance, so the benchmark's bound is the physics', not an approximation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from wmrobot.envs.evalsets import load_evalset

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "push_oracle.py"
spec = importlib.util.spec_from_file_location("push_oracle", BENCHMARK)
oracle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(oracle)


def test_sim_dynamics_rolls_out_the_envs_steps_and_scores_its_distance():
    evalset = load_evalset("push")
    env = evalset.make_env()
    dyn = oracle.SimDynamics(env)
    obs, info = env.reset(seed=0, options=evalset.pairs[0])
    goal = torch.zeros(1, dyn.latent_dim, dtype=torch.float64)
    goal[0, :4] = torch.as_tensor(obs["desired_goal"], dtype=torch.float64)
    assert dyn.cost(dyn.state(env), goal).item() == np.float32(info["distance"])
    # Push the pusher into the block: the block must move, or the check would prove little.
    pusher, block = obs["observation"][:2], obs["observation"][4:6]
    toward = np.clip((block - pusher) / np.abs(block - pusher).max(), -1, 1)
    actions = torch.as_tensor(np.tile(toward, (1, 40, 1)), dtype=torch.float32)
    states = dyn.rollout(dyn.state(env), actions)
    assert states.shape == (1, 40, dyn.latent_dim)
    for t in range(40):
        obs, _, _, _, info = env.step(actions[0, t].numpy())
        torch.testing.assert_close(states[:, t], dyn.state(env), rtol=0, atol=1e-9)
        assert dyn.cost(states[:, t], goal).item() == pytest.approx(info["distance"], rel=1e-6)
    assert np.abs(obs["observation"][4:6] - block).max() > 1e-3  # the block was pushed
    env.close()
