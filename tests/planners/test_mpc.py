"""Receding-horizon control: replan every k steps, warm-start from the shifted plan."""

from __future__ import annotations

import torch
from toys import PointMass, planner_config

from wmrobot.planners import ICEM, RecedingHorizon, make_planner


class Spy:
    """Wraps a planner, recording the warm start of each plan and the calls of the controller."""

    def __init__(self, planner) -> None:
        self.planner, self.inits, self.calls = planner, [], []

    def plan(self, z0, goal_z, init_mean=None):
        self.inits.append(None if init_mean is None else init_mean.clone())
        return self.planner.plan(z0, goal_z, init_mean)

    def reset(self):
        self.calls.append("reset")

    def keep(self, indices):
        self.calls.append(("keep", indices.tolist()))

    def shift(self, steps):
        self.calls.append(("shift", steps))


def shifted(plan: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cat([plan[:, k:], plan[:, -1:].repeat(1, k, 1)], dim=1)


def test_replan_every_k_executes_k_actions_of_each_plan():
    spy = Spy(make_planner(PointMass(), planner_config("mppi"), 0))
    controller = RecedingHorizon(spy, replan_every=3)
    z, goal = torch.zeros(2, 2), torch.tensor([[2.0, 1.0], [-1.0, -2.0]])
    executed, plans = [], []
    for _ in range(7):
        executed.append(controller.act(z, goal))
        if len(spy.inits) > len(plans):
            plans.append(controller.plan)
    assert len(spy.inits) == 3  # steps 0, 3 and 6
    for t, action in enumerate(executed):
        assert torch.equal(action, plans[t // 3][:, t % 3])
    assert spy.inits[0] is None
    assert torch.equal(spy.inits[1], shifted(plans[0], 3))
    assert torch.equal(spy.inits[2], shifted(plans[1], 3))
    assert spy.calls == [("shift", 3), ("shift", 3)]


def test_every_step_replanning_warm_starts_from_the_plan_shifted_by_one():
    spy = Spy(make_planner(PointMass(), planner_config("cem"), 0))
    controller = RecedingHorizon(spy)
    z, goal = torch.zeros(2, 2), torch.ones(2, 2)
    controller.act(z, goal)
    first = controller.plan
    controller.act(z, goal)
    assert torch.equal(spy.inits[1], shifted(first, 1))

    controller.keep(torch.tensor([1]))
    assert controller.plan.shape == (1, 6, 2)
    controller.act(z[:1], goal[:1])
    assert spy.inits[-1].shape == (1, 6, 2)

    controller.reset()
    controller.act(z[:1], goal[:1])
    assert spy.inits[-1] is None
    assert spy.calls == [("shift", 1), ("keep", [1]), ("shift", 1), "reset"]


def test_a_new_batch_size_starts_cold():
    spy = Spy(make_planner(PointMass(), planner_config("mppi"), 0))
    controller = RecedingHorizon(spy, replan_every=2)
    controller.act(torch.zeros(3, 2), torch.ones(3, 2))
    controller.act(torch.zeros(2, 2), torch.ones(2, 2))
    assert spy.inits == [None, None]


def test_icem_carries_its_elites_to_the_next_decision_shifted():
    planner = make_planner(PointMass(), planner_config("icem", keep_elites=0.5), 0)
    assert isinstance(planner, ICEM)
    controller = RecedingHorizon(planner, replan_every=2)
    z, goal = torch.zeros(2, 2), torch.tensor([[2.0, 1.0], [-1.0, -2.0]])
    controller.act(z, goal)
    memory = planner.memory.clone()
    assert memory.shape == (2, 4, 6, 2)  # half of 8 elites
    controller.act(z, goal)
    assert torch.equal(planner.memory, memory)  # no decision yet

    seen = []
    objective = planner.objective
    planner.objective = lambda z0, g, candidates: (
        seen.append(candidates) or objective(z0, g, candidates)
    )
    controller.act(z, goal)
    first = seen[0]
    assert first.shape[1] == 64 + 4
    assert torch.equal(first[:, 64:], shifted(memory.flatten(0, 1), 2).view_as(memory))
    controller.keep(torch.tensor([0]))
    assert planner.memory.shape[0] == 1
    controller.reset()
    assert planner.memory is None


def test_replanning_every_two_steps_still_reaches_the_goal():
    model = PointMass()
    controller = RecedingHorizon(make_planner(model, planner_config("mppi"), 0), replan_every=2)
    z, goal = torch.zeros(1, 2), torch.tensor([[2.0, -2.0]])
    closest = torch.inf
    for _ in range(8):
        z = model.step(z, controller.act(z, goal))
        closest = min(closest, float(torch.linalg.vector_norm(z - goal)))
    assert closest < 0.35


def test_a_prior_proposes_the_starting_mean_of_every_plan():
    planner = make_planner(PointMass(), planner_config("mppi"), 0)
    spy = Spy(planner)
    horizon = planner.cfg.horizon
    z, goal = torch.zeros(2, 2), torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    proposals = []

    def prior(z, goal_z):
        proposals.append(torch.rand(z.shape[0], horizon, 2) - 0.5)
        return proposals[-1]

    controller = RecedingHorizon(spy, replan_every=2, prior=prior)
    for _ in range(4):
        controller.act(z, goal)
    assert len(spy.inits) == len(proposals) == 2  # one proposal per plan, none in between
    for init, proposal in zip(spy.inits, proposals, strict=True):
        assert torch.equal(init, proposal)
    assert spy.calls == [("shift", 2)]
