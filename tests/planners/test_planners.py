"""Properties every planner (CEM, iCEM, MPPI, gradient) keeps, on the point mass z' = z + a."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toys import NAMES, SAMPLING, Broken, PointMass, planner_config, tiny_world_model

from wmrobot.planners import (
    CEM,
    ICEM,
    MPPI,
    GradientPlanner,
    Objective,
    RecedingHorizon,
    make_planner,
)


def build(name: str, dynamics=None, seed: int = 0, **overrides):
    return make_planner(dynamics or PointMass(), planner_config(name, **overrides), seed)


def test_make_planner_builds_the_named_planner():
    kinds = {"cem": CEM, "icem": ICEM, "mppi": MPPI, "grad": GradientPlanner}
    for name, kind in kinds.items():
        assert type(build(name)) is kind


@pytest.mark.parametrize("name", NAMES)
def test_the_plan_costs_less_than_the_zero_plan(name):
    model = PointMass()
    planner = build(name, model)
    z0, goal = torch.zeros(3, 2), torch.tensor([[2.0, -1.0], [-3.0, 0.5], [0.5, 4.0]])
    plan = planner.plan(z0, goal)
    objective = Objective(model, planner.cfg)
    planned = objective(z0, goal, plan[:, None])[:, 0]
    zero = objective(z0, goal, torch.zeros_like(plan)[:, None])[:, 0]
    assert plan.shape == (3, 6, 2)
    assert torch.all(planned < 0.8 * zero)


@pytest.mark.parametrize("name", NAMES)
def test_receding_horizon_reaches_the_goal_in_a_few_steps(name):
    model = PointMass()
    controller = RecedingHorizon(build(name, model))
    z, goal = torch.zeros(2, 2), torch.tensor([[2.5, -1.5], [-1.0, 2.0]])
    closest = torch.full((2,), torch.inf)
    for _ in range(6):  # 3 steps at full speed reach the goals (2.9 and 2.2 away)
        z = model.step(z, controller.act(z, goal))
        closest = torch.minimum(closest, torch.linalg.vector_norm(z - goal, dim=-1))
    assert torch.all(closest < 0.35)


@pytest.mark.parametrize("name", NAMES)
def test_actions_stay_inside_random_bounds(name):
    rng = np.random.default_rng(0)
    for seed in range(12):
        dim = int(rng.integers(1, 4))
        low = rng.uniform(-2.0, 0.5, dim)
        high = low + rng.uniform(0.05, 2.0, dim)
        model = PointMass(dim, torch.tensor(low), torch.tensor(high))
        planner = build(name, model, seed, samples=16, elites=4, iterations=2, grad_steps=4)
        planner.cfg.init_std = planner.cfg.max_std = 5.0  # most samples fall outside
        goal = torch.as_tensor(rng.normal(0, 20, (2, dim)), dtype=torch.float32)
        init = torch.as_tensor(rng.normal(0, 5, (2, 6, dim)), dtype=torch.float32)
        for warm in (None, init):
            plan = planner.plan(torch.zeros(2, dim), goal, warm)
            assert torch.all(plan >= model.action_low) and torch.all(plan <= model.action_high)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_broken_model_gives_back_the_warm_start_with_a_warning(name, bad):
    planner = build(name, Broken(bad))
    warm = torch.rand(2, 6, 2) * 2 - 1
    with pytest.warns(UserWarning, match="NaN/Inf"):
        plan = planner.plan(torch.zeros(2, 2), torch.ones(2, 2), warm)
    assert torch.equal(plan, warm)
    fresh = build(name, Broken(bad))
    with pytest.warns(UserWarning, match="NaN/Inf"):
        plan = fresh.plan(torch.zeros(2, 2), torch.ones(2, 2))
    assert torch.equal(plan, torch.zeros(2, 6, 2))  # mid-range of [-1, 1]


@pytest.mark.parametrize("name", SAMPLING)
def test_candidates_with_nan_costs_are_skipped(name):
    class HalfBroken(PointMass):
        def cost(self, z, goal_z):  # NaN wherever the first step moves left
            c = super().cost(z, goal_z)
            return torch.where(z[:, :1, 0] < 0, torch.nan, c)

    with pytest.warns(UserWarning, match="NaN/Inf"):
        plan = build(name, HalfBroken()).plan(torch.zeros(1, 2), torch.tensor([[3.0, 0.0]]))
    assert torch.isfinite(plan).all()
    assert plan[0, 0, 0] > 0.5  # still heads for the goal


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_plan(name):
    z0, goal = torch.zeros(2, 2), torch.tensor([[1.5, 0.5], [-0.5, 2.0]])
    first = build(name, seed=3).plan(z0, goal)
    assert torch.equal(first, build(name, seed=3).plan(z0, goal))
    if name in SAMPLING:
        assert not torch.equal(first, build(name, seed=4).plan(z0, goal))


@pytest.mark.parametrize("name", NAMES)
def test_batch_rows_do_not_influence_each_other(name):
    # Row i's noise depends on the batch size, not on the other rows' problems: changing
    # row 1's goal leaves row 0's plan bit for bit.
    z0 = torch.zeros(2, 2)
    goals = torch.tensor([[1.5, 0.5], [-0.5, 2.0]])
    other = goals.clone()
    other[1] = torch.tensor([3.0, -3.0])
    a = build(name, seed=1).plan(z0, goals)
    b = build(name, seed=1).plan(z0, other)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[1], b[1])


class Critic(PointMass):
    """Cost is flat; the critic's cost-to-go prefers ending far to the left."""

    has_value = True

    def cost(self, z, goal_z):
        return torch.zeros(z.shape[:-1])

    def value(self, z, goal_z):
        return z[..., 0]


def test_the_value_term_counts_only_with_a_critic_and_a_weight():
    z0, goal = torch.zeros(1, 2), torch.zeros(1, 2)
    actions = torch.tensor([[[-1.0, 0.0]] * 6, [[1.0, 0.0]] * 6])[None]  # (1, 2, 6, 2)
    cfg = planner_config("mppi", value_weight=2.0)
    norm = 5 + cfg.terminal_weight
    assert torch.allclose(
        Objective(Critic(), cfg)(z0, goal, actions), torch.tensor([[-12.0, 12.0]]) / norm
    )
    cfg.value_weight = 0.0
    assert torch.equal(Objective(Critic(), cfg)(z0, goal, actions), torch.zeros(1, 2))
    no_critic = Critic()
    no_critic.has_value = False
    cfg.value_weight = 2.0
    assert torch.equal(Objective(no_critic, cfg)(z0, goal, actions), torch.zeros(1, 2))


@pytest.mark.parametrize("name", NAMES)
def test_planners_follow_the_critic(name):
    plan = build(name, Critic(), value_weight=1.0).plan(torch.zeros(1, 2), torch.zeros(1, 2))
    assert plan[0, :, 0].sum() < -0.5 * plan.shape[1]


@pytest.mark.parametrize("name", NAMES)
def test_the_smoothness_term_lowers_action_differences(name):
    z0, goal = torch.zeros(4, 2), torch.tensor([[2.0, 0.0], [0.0, -2.0], [-1.0, 1.0], [1.0, 1.0]])

    def roughness(weight: float) -> float:
        plan = build(name, seed=2, smooth_weight=weight).plan(z0, goal)
        return float(plan.diff(dim=1).pow(2).sum())

    assert roughness(5.0) < 0.5 * roughness(0.0)


@pytest.mark.parametrize("name", NAMES)
def test_planning_through_a_tiny_world_model(name):
    model = tiny_world_model()
    z0, goal = torch.randn(3, 16), torch.randn(3, 16)
    planner = make_planner(model, planner_config(name, grad_steps=5), seed=1)
    plan = planner.plan(z0, goal)
    assert plan.shape == (3, 6, 2) and torch.isfinite(plan).all()
    assert torch.all(plan.abs() <= 1)
    again = make_planner(model, planner_config(name, grad_steps=5), seed=1).plan(z0, goal)
    assert torch.equal(plan, again)


def test_the_world_models_critic_enters_the_objective():
    model = tiny_world_model(critic=True)
    z0, goal, actions = torch.randn(2, 16), torch.randn(2, 16), torch.rand(2, 5, 6, 2)
    with torch.no_grad():
        with_value = Objective(model, planner_config("mppi", value_weight=1.0))(z0, goal, actions)
        without = Objective(model, planner_config("mppi", value_weight=0.0))(z0, goal, actions)
        z_last = model.rollout(z0.repeat_interleave(5, 0), actions.flatten(0, 1))[:, -1]
        value = model.value(z_last, goal.repeat_interleave(5, 0)).view(2, 5)
    assert torch.allclose(with_value - without, value / (5 + 2.0), atol=1e-5)
