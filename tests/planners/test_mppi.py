"""MPPI and receding-horizon control on a toy latent model: z' = z + 0.1 a, cost ||z - goal||^2."""

from __future__ import annotations

import pytest
import torch

from wmrobot.planners import MPPI, Dynamics, MPPIConfig, RecedingHorizon


class PointDynamics:
    """A 2-D point that moves by a tenth of each action; the cost is the squared distance."""

    latent_dim = 2

    def __init__(self, low: float = -1.0, high: float = 1.0) -> None:
        self.action_low = torch.full((2,), low)
        self.action_high = torch.full((2,), high)

    def step(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return z + 0.1 * a

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return z0[:, None] + 0.1 * actions.cumsum(dim=1)

    def cost(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        return (z - goal_z).pow(2).sum(-1)


class SometimesNaN(PointDynamics):
    """Returns NaN for every third candidate, as a model off its data can."""

    def cost(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        c = super().cost(z, goal_z)
        c[::3] = float("nan")
        return c


def config(**overrides) -> MPPIConfig:
    values = dict(
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
    return MPPIConfig(**{**values, **overrides})


def drive(model: PointDynamics, z: torch.Tensor, goal: torch.Tensor, steps: int) -> torch.Tensor:
    controller = RecedingHorizon(MPPI(model, config(), seed=0))
    for _ in range(steps):
        a = controller.act(z, goal)
        assert a.shape == z.shape
        assert torch.all(a >= model.action_low) and torch.all(a <= model.action_high)
        z = model.step(z, a)
    return z


def test_the_toy_model_is_a_dynamics():
    assert isinstance(PointDynamics(), Dynamics)


def test_receding_horizon_drives_the_point_to_its_goal():
    model = PointDynamics()
    z, goal = torch.zeros(1, 2), torch.tensor([[1.0, -0.5]])
    final = drive(model, z, goal, steps=30)
    assert torch.linalg.vector_norm(final - goal) < 0.1


def test_each_row_of_a_batch_moves_toward_its_own_goal():
    model = PointDynamics()
    z = torch.zeros(3, 2)
    goals = torch.tensor([[0.8, 0.0], [-0.8, 0.0], [0.0, 0.8]])
    final = drive(model, z, goals, steps=15)
    before = torch.linalg.vector_norm(z - goals, dim=-1)
    after = torch.linalg.vector_norm(final - goals, dim=-1)
    assert torch.all(after < 0.5 * before)


@pytest.mark.parametrize(("low", "high"), [(-1.0, 1.0), (-0.3, 0.5)])
def test_plans_stay_within_the_action_bounds(low, high):
    model = PointDynamics(low, high)
    planner = MPPI(model, config(init_std=5.0, max_std=5.0), seed=0)
    goal = torch.tensor([[-10.0, 10.0]])  # far away: the optimum is on the bounds
    plan = planner.plan(torch.zeros(1, 2), goal)
    assert plan.shape == (1, 8, 2)
    assert plan.min() >= low and plan.max() <= high
    # Pushing toward the far goal saturates: -x at the lower bound, +y at the upper.
    assert plan[0, 0, 0] < low / 2 and plan[0, 0, 1] > high / 2
    warm = planner.plan(torch.zeros(1, 2), goal, init_mean=torch.full((1, 8, 2), 3.0))
    assert warm.min() >= low and warm.max() <= high


def test_same_seed_gives_the_same_plan():
    z, goal = torch.zeros(2, 2), torch.tensor([[0.5, 0.5], [-0.5, 0.2]])
    a = MPPI(PointDynamics(), config(), seed=4).plan(z, goal)
    b = MPPI(PointDynamics(), config(), seed=4).plan(z, goal)
    c = MPPI(PointDynamics(), config(), seed=5).plan(z, goal)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_nan_costs_are_ignored_with_a_warning():
    model = SometimesNaN()
    goal = torch.tensor([[0.5, -0.5]])
    with pytest.warns(UserWarning, match="NaN"):
        plan = MPPI(model, config(), seed=0).plan(torch.zeros(1, 2), goal)
    assert torch.isfinite(plan).all()
    assert plan[0, 0, 0] > 0 and plan[0, 0, 1] < 0  # still heads for the goal


def test_all_nan_costs_still_give_finite_actions():
    class AllNaN(PointDynamics):
        def cost(self, z, goal_z):
            return torch.full(z.shape[:-1], float("nan"))

    with pytest.warns(UserWarning, match="NaN"):
        plan = MPPI(AllNaN(), config(), seed=0).plan(torch.zeros(2, 2), torch.ones(2, 2))
    assert torch.isfinite(plan).all()


def test_more_elites_than_samples_is_an_error():
    with pytest.raises(ValueError, match="elites"):
        MPPI(PointDynamics(), config(samples=8, elites=9))


def test_receding_horizon_warm_starts_from_the_shifted_plan():
    planner = MPPI(PointDynamics(), config(iterations=1), seed=0)
    controller = RecedingHorizon(planner)
    z, goal = torch.zeros(2, 2), torch.ones(2, 2)
    controller.act(z, goal)
    first = controller.plan.clone()

    seen = {}
    original = planner.plan

    def spy(z0, goal_z, init_mean=None):
        seen["init"] = init_mean
        return original(z0, goal_z, init_mean)

    planner.plan = spy
    controller.act(z, goal)
    assert torch.equal(seen["init"], torch.cat([first[:, 1:], first[:, -1:]], dim=1))

    controller.keep(torch.tensor([1]))
    assert controller.plan.shape == (1, 8, 2)
    controller.act(z[:1], goal[:1])
    assert seen["init"].shape == (1, 8, 2)

    controller.reset()
    controller.act(z[:1], goal[:1])
    assert seen["init"] is None
