"""iCEM: decaying population, elites carried between iterations, the best candidate returned."""

from __future__ import annotations

import torch
from toys import PointMass, planner_config

from wmrobot.planners import ICEM
from wmrobot.planners.icem import kept_elites, population_sizes


def recording(planner: ICEM) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record every (candidates, costs) the planner scores."""
    seen, objective = [], planner.objective

    def spy(z0, goal_z, candidates):
        cost = objective(z0, goal_z, candidates)
        seen.append((candidates, cost))
        return cost

    planner.objective = spy
    return seen


def test_the_population_decays_to_twice_the_elites():
    cfg = planner_config("icem", samples=100, elites=10, iterations=5, decay=2.0)
    assert population_sizes(cfg) == [100, 50, 25, 20, 20]
    assert kept_elites(cfg) == 3
    cfg.decay = 1.0
    assert population_sizes(cfg) == [100] * 5


def test_elites_join_the_next_iteration_and_the_best_candidate_is_returned():
    planner = ICEM(PointMass(), planner_config("icem", keep_elites=0.5), seed=0)
    seen = recording(planner)
    z0, goal = torch.zeros(2, 2), torch.tensor([[2.0, -1.0], [-1.5, 0.5]])
    plan = planner.plan(z0, goal)
    sizes = [c.shape[1] for c, _ in seen]
    assert sizes == [64] + [n + 4 for n in population_sizes(planner.cfg)[1:]]
    for (before, cost), (after, _) in zip(seen, seen[1:], strict=False):
        best = cost.argsort(dim=1, stable=True)[:, :4]
        carried = before.gather(1, best[..., None, None].expand(-1, -1, 6, 2))
        assert torch.equal(after[:, -4:], carried)
    candidates = torch.cat([c for c, _ in seen], dim=1)
    costs = torch.cat([c for _, c in seen], dim=1)
    winner = costs.argmin(dim=1)
    assert torch.equal(plan, candidates[torch.arange(2), winner])


def test_colored_noise_gives_smoother_first_iterations_than_white():
    z0, goal = torch.zeros(1, 2), torch.tensor([[1.0, 1.0]])
    roughness = []
    for beta in (0.0, 2.0):
        cfg = planner_config("icem", beta=beta, samples=200, horizon=20)
        planner = ICEM(PointMass(2, -10.0, 10.0), cfg, seed=0)  # wide bounds: no clipping
        seen = recording(planner)
        planner.plan(z0, goal)
        roughness.append(float(seen[0][0].diff(dim=2).pow(2).mean()))
    assert roughness[1] < 0.5 * roughness[0]
