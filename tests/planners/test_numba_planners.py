"""The Numba backend: exported models match torch, and one seed gives one plan on both backends."""

from __future__ import annotations

import importlib.util
import re
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from toys import PointMass, planner_config, tiny_world_model

from wmrobot.errors import ConfigError
from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.planners import TORCH_PLANNERS, Objective, RecedingHorizon, make_planner
from wmrobot.planners.numba import NUMBA_PLANNERS, choose_backend, make_numba_planner
from wmrobot.planners.numba.scoring import pack_model, score

SAMPLING = ["mppi", "cem", "icem"]
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "planner_latency.py"


def config(name: str, **overrides):
    """A small budget with every objective term on (critic, smoothness, terminal weight)."""
    values = dict(horizon=8, samples=48, iterations=3, elites=6, smooth_weight=0.05)
    if name == "icem":
        values.update(beta=2.0, keep_elites=0.5)
    return planner_config(name, **{**values, **overrides})


def problem(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 16, generator=gen), torch.randn(batch, 16, generator=gen)


def test_the_exported_model_scores_as_the_torch_objective():
    model = tiny_world_model(critic=True)
    cfg = config("mppi", horizon=5)
    z0, goal = problem(3)
    actions = torch.rand(3, 7, 5, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    objective = Objective(model, cfg)
    with torch.no_grad():
        expect = objective(z0, goal, actions).numpy()
    got = score(pack_model(model), objective, z0, goal, actions)
    assert objective.value_weight > 0 and objective.smooth_weight > 0
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SAMPLING)
def test_one_seed_gives_one_plan_on_both_backends(name):
    model = tiny_world_model(critic=True)
    cfg = config(name, min_std=0.2)
    planners = [TORCH_PLANNERS[name](model, cfg, seed=7), make_numba_planner(model, cfg, seed=7)]
    z0, goal = problem(2)
    first = [p.plan(z0, goal) for p in planners]
    # A warm-started second decision, which iCEM also seeds with the elites it kept.
    warm = torch.roll(first[0], -1, dims=1)
    second = [p.plan(z0, goal, warm) for p in planners]
    for torch_plan, numba_plan in (first, second):
        torch.testing.assert_close(numba_plan, torch_plan, rtol=0, atol=1e-4)
        assert torch_plan.abs().max() > 0.05  # a plan, not the mid-range start


def test_the_same_seed_repeats_and_another_seed_differs():
    model = tiny_world_model(critic=False)
    cfg = config("mppi")
    z0, goal = problem(1)
    first, again, other = (make_numba_planner(model, cfg, s).plan(z0, goal) for s in (3, 3, 4))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (first - other).abs().max() > 1e-3


def test_two_threads_give_the_one_thread_plan():
    model = tiny_world_model(critic=True)
    z0, goal = problem(3)
    threads = torch.get_num_threads()
    plans = []
    for n in (1, 2):
        torch.set_num_threads(n)  # the Numba planner follows torch's thread count
        try:
            plans.append(make_numba_planner(model, config("cem"), seed=0).plan(z0, goal))
        finally:
            torch.set_num_threads(threads)
    torch.testing.assert_close(plans[1], plans[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", SAMPLING)
def test_plans_stay_inside_asymmetric_bounds(name):
    model = tiny_world_model(critic=False)
    model.action_low = torch.tensor([-0.3, 0.1])
    model.action_high = torch.tensor([0.2, 0.9])
    plan = make_numba_planner(model, config(name, init_std=2.0), seed=0).plan(*problem(4))
    assert torch.all(plan >= model.action_low) and torch.all(plan <= model.action_high)


def test_a_nan_model_keeps_the_warm_start_and_warns_once():
    model = tiny_world_model(critic=False)
    with torch.no_grad():
        model.predictor.net[-1].bias.fill_(torch.nan)  # every rollout turns NaN
    planner = make_numba_planner(model, config("mppi"), seed=0)
    z0, goal = problem(2)
    warm = torch.full((2, 8, 2), 0.25)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = planner.plan(z0, goal, warm)
        planner.plan(z0, goal, warm)
    torch.testing.assert_close(first, warm)
    assert len([w for w in caught if "NaN/Inf" in str(w.message)]) == 1


def test_refuses_what_it_cannot_run_in_one_line():
    gru = WorldModel(4, 2, ModelConfig(16, 32, 2, 8, 0.99, 0.1, 1.0, predictor="gru"))
    with pytest.raises(ConfigError, match="model.predictor=gru: use planner.backend=torch"):
        make_numba_planner(gru, config("mppi"))
    with pytest.raises(ConfigError, match="not one: use planner.backend=torch"):
        make_numba_planner(PointMass(), config("mppi"))
    with pytest.raises(ConfigError, match="planner.name=grad has no numba backend"):
        make_numba_planner(tiny_world_model(), planner_config("grad"))


class ScaledCost(WorldModel):
    """A model whose cost is not the form the kernel computes."""

    def cost(self, z, goal_z):
        return 2 * super().cost(z, goal_z)


def test_refuses_a_model_whose_export_does_not_reproduce_it():
    torch.manual_seed(0)
    model = ScaledCost(4, 2, ModelConfig(16, 32, 2, 8, 0.99, 0.1, 1.0)).eval()
    with pytest.raises(ConfigError, match="differs from its torch outputs"):
        pack_model(model)


def slowed(planner_class: type) -> type:
    """``planner_class`` 200 ms slower per decision (more than any decision here takes)."""

    class Slow(planner_class):
        def plan(self, *args, **kwargs):
            time.sleep(0.2)
            return super().plan(*args, **kwargs)

    return Slow


@pytest.mark.parametrize("slow", ["torch", "numba"])
def test_auto_picks_the_backend_that_decides_faster(slow, monkeypatch):
    table = TORCH_PLANNERS if slow == "torch" else NUMBA_PLANNERS
    monkeypatch.setitem(table, "mppi", slowed(table["mppi"]))
    faster = "numba" if slow == "torch" else "torch"
    assert choose_backend(tiny_world_model(critic=False), config("mppi")) == faster


def test_auto_keeps_torch_where_numba_cannot_run():
    model = tiny_world_model(critic=False)
    assert choose_backend(model, planner_config("grad")) == "torch"
    assert choose_backend(PointMass(), config("mppi")) == "torch"


class Wrapped:
    """Any Dynamics whose export() has the documented attributes plans on numba: here a
    world model behind a plain object, its export a plain namespace."""

    def __init__(self, model: WorldModel) -> None:
        self.model, self.latent_dim, self.has_value = model, model.latent_dim, model.has_value
        self.action_low, self.action_high = model.action_low, model.action_high

    def rollout(self, z0, actions):
        return self.model.rollout(z0, actions)

    def cost(self, z, goal_z):
        return self.model.cost(z, goal_z)

    def value(self, z, goal_z):
        return self.model.value(z, goal_z)

    def export(self):
        return SimpleNamespace(**vars(self.model.export()))


def test_the_numba_backend_reads_only_the_export_of_a_dynamics():
    model = tiny_world_model(critic=True)
    cfg = config("mppi", min_std=0.2)
    z0, goal = problem(2)
    plain = make_numba_planner(Wrapped(model), cfg, seed=7).plan(z0, goal)
    torch.testing.assert_close(
        plain, TORCH_PLANNERS["mppi"](model, cfg, seed=7).plan(z0, goal), rtol=0, atol=1e-4
    )
    assert plain.abs().max() > 0.05


def test_make_planner_backend_numba_drives_receding_horizon():
    model = tiny_world_model(critic=True)
    planner = make_planner(model, config("icem", backend="numba"), seed=0)
    assert type(planner) is NUMBA_PLANNERS["icem"]
    controller = RecedingHorizon(planner)
    z, goal = problem(2)
    for _ in range(3):
        action = controller.act(z, goal)
        assert action.shape == (2, 2) and torch.isfinite(action).all()
    controller.keep(torch.tensor([1]))
    assert controller.act(z[1:], goal[1:]).shape == (1, 2)


def test_the_latency_benchmark_quick_run(capsys):
    spec = importlib.util.spec_from_file_location("planner_latency", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        rows = bench.main(["--quick"])
    finally:
        torch.set_num_threads(threads)
    (row,) = rows.values()
    assert row["numba"] > 0 and row["torch"] > 0
    out = capsys.readouterr().out
    assert "torch/numba" in out
    assert re.search(r"10 ms goal on one core, [^:]*: (met|NOT met)\)", out)
    assert "load average" in out
