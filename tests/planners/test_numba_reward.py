"""The Numba backend on reward tasks: the predicted return scored as torch's, the policy prior's
sequences, and plans that find the best sequence of a model whose reward is set by hand."""

from __future__ import annotations

import importlib.util
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from toys import planner_config, tiny_world_model

from wmrobot.errors import ConfigError
from wmrobot.model.world_model import WorldModel
from wmrobot.planners import TORCH_PLANNERS, Objective
from wmrobot.planners.numba import NUMBA_PLANNERS, choose_backend, make_numba_planner
from wmrobot.planners.numba.scoring import coefficients, pack_model, policy_rollout, score

SAMPLING = ["mppi", "cem", "icem"]
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "planner_latency.py"


def reward_model(kind: str = "twohot", continuation: bool = True, **changes) -> WorldModel:
    """An untrained reward-task model (D=16), its heads small so that the tests stay fast."""
    return tiny_world_model(
        critic=False,
        task="reward",
        reward_loss=kind,
        continuation=continuation,
        head_hidden=32,
        bins=21,
        **{"reward_scale": 1.0, **changes},
    )


def random_problem(model, batch, count, horizon, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z0 = 2 * torch.randn(batch, model.latent_dim, generator=gen)
    actions = torch.rand(batch, count, horizon, model.action_dim, generator=gen) * 2 - 1
    return z0, actions


@pytest.mark.parametrize("continuation", [False, True])
@pytest.mark.parametrize("kind", ["twohot", "regression"])
def test_the_predicted_return_scores_as_torch(kind, continuation):
    model = reward_model(kind, continuation, reward_scale=0.5)
    objective = Objective(model, planner_config("mppi", horizon=5, smooth_weight=0.3))
    # 3 x 11 candidates: blocks that straddle batch rows, and a last block only partly filled
    z0, actions = random_problem(model, 3, 11, 5)
    with torch.no_grad():
        expect = objective(z0, z0, actions).numpy()
        alive = model.cont(model.rollout(z0, actions[:, 0]))
    got = score(pack_model(model), objective, z0, torch.zeros_like(z0), actions)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)
    assert np.ptp(expect) > 0.01  # candidates the return tells apart
    assert (alive.min() < 0.9) == continuation  # the continuation weighs in


@pytest.mark.parametrize("name", SAMPLING)
def test_one_seed_gives_one_plan_on_both_backends_without_policy_samples(name):
    model = reward_model()
    cfg = planner_config(name, horizon=4, samples=48, iterations=3, elites=6, policy_samples=0)
    planners = [TORCH_PLANNERS[name](model, cfg, seed=5), make_numba_planner(model, cfg, seed=5)]
    z0, _ = random_problem(model, 2, 1, 1)
    first = [p.plan(z0, z0) for p in planners]
    warm = torch.roll(first[0], -1, dims=1)
    second = [p.plan(z0, z0, warm) for p in planners]
    for torch_plan, numba_plan in (first, second):
        torch.testing.assert_close(numba_plan, torch_plan, rtol=0, atol=1e-4)
        assert torch_plan.abs().max() > 0.05  # a plan, not the mid-range start


def test_refresh_plans_with_the_models_new_weights():
    """An online update changes the weights; after refresh() the Numba planner plans with the
    new ones, as the torch planner (which calls the model itself) does."""
    model = reward_model()
    cfg = planner_config("mppi", horizon=4, samples=48, iterations=3, elites=6, policy_samples=0)
    numba_planner = make_numba_planner(model, cfg, seed=5)
    with torch.no_grad():
        for p in model.reward_head.parameters():
            p.add_(torch.randn_like(p))
    z0, _ = random_problem(model, 2, 1, 1)
    stale = numba_planner.plan(z0, z0)
    numba_planner.rng = np.random.default_rng(5)
    numba_planner.refresh()
    fresh = numba_planner.plan(z0, z0)
    expect = TORCH_PLANNERS["mppi"](model, cfg, seed=5).plan(z0, z0)
    torch.testing.assert_close(fresh, expect, rtol=0, atol=1e-4)
    assert (stale - expect).abs().max() > 1e-3  # the old copy planned otherwise


def test_the_policy_prior_samples_the_policy_along_its_rollout():
    model = reward_model(action_dim=3)
    packed = pack_model(model)
    z0, _ = random_problem(model, 2, 1, 1, seed=4)
    eps = np.random.default_rng(0).standard_normal((2, BLOCK_AND_SOME, 4, 3), np.float32)
    prior = np.empty_like(eps)
    coef = coefficients(packed, 0.0, 0.0)
    policy_rollout(tuple(packed.net), packed.layers, coef, packed.bounds, z0.numpy(), eps, prior)
    # the same sequences by the torch modules: GaussianPolicy.sample's formula on this noise
    z, expect = z0.repeat_interleave(BLOCK_AND_SOME, 0), []
    mid, half = model.action_scale()
    with torch.no_grad():
        for t in range(4):
            mean, log_std = model.policy(z)
            noise = torch.from_numpy(eps[:, :, t]).flatten(0, 1)
            a = mid + half * torch.tanh(mean + noise * log_std.exp())
            expect.append(a)
            z = model.predict(z, a)
    expect = torch.stack(expect, 1).view(2, BLOCK_AND_SOME, 4, 3).numpy()
    np.testing.assert_allclose(prior, expect, rtol=1e-4, atol=1e-5)
    assert np.ptp(prior) > 0.1


BLOCK_AND_SOME = 19  # more policy sequences than one block of lanes holds


def hand_set_model() -> WorldModel:
    """Reward a_0 - a_1 (a regression head of depth 0), value 0, no continuation; actions in
    [-0.3, 0.2] x [0.1, 0.9]: the best sequence is (0.2, 0.1) at every step."""
    model = reward_model("regression", continuation=False, head_depth=0)
    model.action_low = torch.tensor([-0.3, 0.1])
    model.action_high = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        head = model.reward_head[0]  # Linear(D + A, 1)
        head.weight.zero_()
        head.bias.zero_()
        head.weight[0, -2:] = torch.tensor([1.0, -1.0])
        for q in model.q.heads:
            q[0].weight.zero_()
            q[0].bias.zero_()
    return model


@pytest.mark.parametrize("name", SAMPLING)
def test_plans_find_the_best_sequence_inside_the_bounds(name):
    model = hand_set_model()
    cfg = planner_config(name, horizon=3, samples=128, iterations=6, init_std=2.0, temperature=0.01)
    z0, _ = random_problem(model, 3, 1, 1)
    plan = make_numba_planner(model, cfg, seed=0).plan(z0, z0)
    assert torch.isfinite(plan).all()
    assert torch.all(plan >= model.action_low) and torch.all(plan <= model.action_high)
    best = torch.tensor([0.2, 0.1]).expand_as(plan)
    torch.testing.assert_close(plan, best, rtol=0, atol=0.02)


@pytest.mark.parametrize("samples", [0, 8])
def test_policy_sequences_seed_the_elites(samples):
    """Gaussian candidates held near mid-range; only the policy proposes the best actions."""
    model = hand_set_model()
    with torch.no_grad():  # the policy's mode: tanh(3) of the half range up, then down
        last = model.policy.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([3.0, -3.0, -10.0, -10.0]))  # means, then raw log std
    cfg = planner_config(
        "mppi", horizon=3, init_std=0.01, min_std=0.0, elites=1, policy_samples=samples
    )
    z0, _ = random_problem(model, 2, 1, 1)
    plan = make_numba_planner(model, cfg, seed=0).plan(z0, z0)
    near_best = torch.allclose(plan, torch.tensor([0.2, 0.1]).expand_as(plan), atol=0.01)
    assert near_best == (samples > 0)


def test_two_threads_give_the_one_thread_plan():
    model = reward_model()
    z0, _ = random_problem(model, 3, 1, 1)
    cfg = planner_config("icem", horizon=4, samples=48, elites=6, policy_samples=8)
    threads = torch.get_num_threads()
    plans = []
    for n in (1, 2):
        torch.set_num_threads(n)  # the Numba planner follows torch's thread count
        try:
            plans.append(make_numba_planner(model, cfg, seed=0).plan(z0, z0))
        finally:
            torch.set_num_threads(threads)
    torch.testing.assert_close(plans[1], plans[0], rtol=0, atol=1e-5)


def test_a_nan_model_keeps_the_warm_start_and_warns_once():
    model = reward_model()
    with torch.no_grad():
        model.predictor.net[-1].bias.fill_(torch.nan)  # every rollout, the policy's too, is NaN
    planner = make_numba_planner(model, planner_config("mppi", horizon=4, policy_samples=8))
    z0, _ = random_problem(model, 2, 1, 1)
    warm = torch.full((2, 4, 2), 0.25)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = planner.plan(z0, z0, warm)
        planner.plan(z0, z0, warm)
    torch.testing.assert_close(first, warm)
    assert len([w for w in caught if "NaN/Inf" in str(w.message)]) == 1


class Unlike(WorldModel):
    """A reward model one of whose parts is not the plain form the kernels compute."""

    part = "reward"

    def reward(self, z, a):
        return super().reward(z, a) + (0.5 if self.part == "reward" else 0.0)

    def cont(self, z):
        return super().cont(z) * (0.5 if self.part == "cont" else 1.0)

    def state_value(self, z):
        return super().state_value(z) * (2.0 if self.part == "state_value" else 1.0)


@pytest.mark.parametrize("part", ["reward", "cont", "state_value"])
def test_refuses_a_reward_model_whose_export_does_not_reproduce_it(part):
    model = reward_model()
    model.__class__, model.part = Unlike, part
    with pytest.raises(ConfigError, match="differs from its torch outputs"):
        pack_model(model)


def test_auto_measures_a_reward_model(monkeypatch):
    class Slow(TORCH_PLANNERS["mppi"]):
        def plan(self, *args, **kwargs):
            time.sleep(0.2)  # more than any decision here takes
            return super().plan(*args, **kwargs)

    monkeypatch.setitem(TORCH_PLANNERS, "mppi", Slow)
    assert choose_backend(reward_model(), planner_config("mppi", horizon=3)) == "numba"
    assert type(make_numba_planner(reward_model(), planner_config("cem"))) is NUMBA_PLANNERS["cem"]


def test_the_latency_benchmark_quick_run_on_a_reward_task(capsys):
    spec = importlib.util.spec_from_file_location("planner_latency", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        rows = bench.main(["--task", "reward", "--quick", "--hidden", "32"])
    finally:
        torch.set_num_threads(threads)
    assert list(rows) == [("InvertedPendulum-v5", 1)]
    (row,) = rows.values()
    assert row["numba"] > 0 and row["torch"] > 0
    out = capsys.readouterr().out
    cfg = bench.learn_planner_config()  # configs/learn.yaml's planner
    assert f"horizon {cfg.horizon}, {cfg.samples} samples" in out and cfg.policy_samples > 0
    assert re.search(r"B=1: torch/numba \d+\.\d\d-\d+\.\d\d", out)
