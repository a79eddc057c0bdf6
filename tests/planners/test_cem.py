"""CEM: one iteration checked against the formula (elite mean and std, smoothed by alpha)."""

from __future__ import annotations

import numpy as np
import torch
from toys import PointMass, planner_config, scored_candidates

from wmrobot.planners import CEM


def test_one_iteration_follows_the_formula():
    model = PointMass(2, -1.0, 0.5)
    planner = CEM(model, planner_config("cem", iterations=1, alpha=0.25), seed=5)
    z0, goal = torch.zeros(2, 2), torch.tensor([[-2.0, 1.0], [1.5, 0.0]])
    init = torch.tensor(np.random.default_rng(1).uniform(-1, 0.5, (2, 6, 2)), dtype=torch.float32)
    candidates, cost = scored_candidates(planner, z0, goal, init, seed=5)
    plan = planner.plan(z0, goal, init).numpy()
    mean = np.clip(init.numpy(), -1.0, 0.5)
    for row in range(2):
        elites = candidates[row, np.argsort(cost[row], kind="stable")[:8]]
        expected = 0.25 * mean[row] + 0.75 * elites.mean(0)
        np.testing.assert_allclose(plan[row], expected, atol=1e-5)
