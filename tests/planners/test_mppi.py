"""MPPI: one iteration checked against the formula, bounds saturation, the MPPIConfig name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toys import PointMass, planner_config, scored_candidates

from wmrobot.planners import MPPI, Dynamics, MPPIConfig


def test_one_iteration_follows_the_formula():
    model = PointMass(2, -0.5, 1.0)
    planner = MPPI(model, planner_config("mppi", iterations=1, temperature=0.3), seed=5)
    z0, goal = torch.zeros(2, 2), torch.tensor([[2.0, -1.0], [0.0, 1.5]])
    init = torch.tensor(np.random.default_rng(1).uniform(-1, 1.5, (2, 6, 2)), dtype=torch.float32)
    candidates, cost = scored_candidates(planner, z0, goal, init, seed=5)
    plan = planner.plan(z0, goal, init).numpy()
    for row in range(2):
        order = np.argsort(cost[row], kind="stable")[:8]
        w = np.exp(-(cost[row, order] - cost[row, order[0]]) / 0.3)
        w /= w.sum()
        expected = np.einsum("k,kha->ha", w, candidates[row, order])
        np.testing.assert_allclose(plan[row], expected, atol=1e-5)


@pytest.mark.parametrize(("low", "high"), [(-1.0, 1.0), (-0.3, 0.5)])
def test_far_goals_saturate_the_bounds(low, high):
    planner = MPPI(PointMass(2, low, high), planner_config("mppi", init_std=5.0, max_std=5.0))
    plan = planner.plan(torch.zeros(1, 2), torch.tensor([[-10.0, 10.0]]))
    assert plan.min() >= low and plan.max() <= high
    # Pushing toward the far goal saturates: -x at the lower bound, +y at the upper.
    assert plan[0, 0, 0] < low / 2 and plan[0, 0, 1] > high / 2


def test_the_toy_model_is_a_dynamics_and_mppi_config_still_builds_mppi():
    assert isinstance(PointMass(), Dynamics)
    cfg = MPPIConfig(
        horizon=8,
        samples=64,
        iterations=4,
        elites=8,
        temperature=0.5,
        init_std=1.0,
        min_std=0.05,
        max_std=2.0,
        terminal_weight=2.0,
    )
    assert cfg.name == "mppi"
    plan = MPPI(PointMass(), cfg).plan(torch.zeros(1, 2), torch.ones(1, 2))
    assert plan.shape == (1, 8, 2) and torch.isfinite(plan).all()
