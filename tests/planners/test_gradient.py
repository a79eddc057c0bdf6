"""Gradient planning: Adam through the model, inside the bounds, never worse than its start."""

from __future__ import annotations

import torch
from toys import PointMass, planner_config, tiny_world_model

from wmrobot.planners import CEM, GradientPlanner, Objective


def test_planning_leaves_the_model_gradients_alone_and_runs_under_no_grad():
    model = tiny_world_model()
    planner = GradientPlanner(model, planner_config("grad", grad_steps=5))
    z0, goal = torch.randn(2, 16), torch.randn(2, 16)
    with torch.no_grad():  # as the agent calls it
        plan = planner.plan(z0, goal)
    assert plan.shape == (2, 6, 2) and torch.isfinite(plan).all()
    assert all(p.grad is None for p in model.parameters())


def test_the_plan_is_never_worse_than_the_start():
    model = tiny_world_model()
    planner = GradientPlanner(model, planner_config("grad", grad_steps=10, lr=0.5))
    z0, goal = torch.randn(3, 16), torch.randn(3, 16)
    start = torch.rand(3, 6, 2) * 2 - 1
    objective = Objective(model, planner.cfg)
    with torch.no_grad():
        before = objective(z0, goal, start[:, None])[:, 0]
        after = objective(z0, goal, planner.plan(z0, goal, start)[:, None])[:, 0]
    assert torch.all(after <= before)
    assert torch.any(after < before)


def test_actions_on_the_bounds_can_still_move_inward():
    # The tanh start is clipped inside the bounds, so a plan saturated the wrong way recovers.
    planner = GradientPlanner(PointMass(), planner_config("grad", grad_steps=40, lr=0.5))
    wrong = torch.full((1, 6, 2), -1.0)
    plan = planner.plan(torch.zeros(1, 2), torch.tensor([[3.0, 3.0]]), wrong)
    assert torch.all(plan[0, :3] > 0.5)


def test_refining_starts_from_the_cem_plan():
    model, z0, goal = PointMass(), torch.zeros(2, 2), torch.tensor([[2.0, 1.0], [-1.0, 0.5]])
    cfg = planner_config("grad+cem", grad_steps=1, lr=1e-6)
    cem_plan = CEM(model, cfg, seed=3).plan(z0, goal)
    refined = GradientPlanner(model, cfg, seed=3).plan(z0, goal)
    assert (refined - cem_plan).abs().max() < 2e-3
