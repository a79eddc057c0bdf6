"""The Numba kernels' fast paths: blocks of candidates in SIMD lanes, layer widths that are
multiples of nothing the kernels group by, the one-thread path of the decision."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from torch import nn
from toys import planner_config, tiny_world_model

from wmrobot.model.export import export_mlp
from wmrobot.model.world_model import WorldModel, mlp
from wmrobot.planners import Objective
from wmrobot.planners.numba import make_numba_planner
from wmrobot.planners.numba import planners as numba_planners
from wmrobot.planners.numba.kernels import BLOCK, ROW_BY_ROW, pack_mlp, run_mlp
from wmrobot.planners.numba.scoring import pack_model, score


def odd_world_model() -> WorldModel:
    """Widths that are multiples of nothing the kernels group by: 5 + 3 inputs, hidden 13 (four
    outputs at a time, then one), a critic 37 wide (an odd LayerNorm) into 7."""
    return tiny_world_model(
        seed=3,
        action_dim=3,
        latent_dim=5,
        hidden=13,
        goal_dim=3,
        latent_weight=0.3,
        critic_hidden=37,
        critic_embed=7,
    )


def scores(model, z0, goal, actions, smooth_weight=0.05):
    """(numba, torch) J of actions (B, N, H, A) from z0 (B, D) to goal (B, D)."""
    cfg = planner_config("mppi", horizon=actions.shape[2], smooth_weight=smooth_weight)
    objective = Objective(model, cfg)
    with torch.no_grad():
        expect = objective(z0, goal, actions).numpy()
    got = score(pack_model(model), objective, z0, goal, actions)
    return got, expect


def random_problem(model, batch, count, horizon, seed=0):
    gen = torch.Generator().manual_seed(seed)
    d, a = model.latent_dim, model.action_dim
    z0, goal = torch.randn(batch, d, generator=gen), torch.randn(batch, d, generator=gen)
    actions = torch.rand(batch, count, horizon, a, generator=gen) * 2 - 1
    return z0, goal, actions


def test_odd_widths_score_as_torch():
    model = odd_world_model()
    # 3 x 11 candidates: blocks that straddle batch rows, and a last block only partly filled
    z0, goal, actions = random_problem(model, 3, 11, 6)
    assert (3 * 11) % BLOCK != 0
    got, expect = scores(model, z0, goal, actions)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make_model", [tiny_world_model, odd_world_model])
def test_a_candidate_scores_the_same_alone_or_in_a_block(make_model):
    model = make_model()
    z0, goal, actions = random_problem(model, 1, BLOCK + 5, 4, seed=1)
    together, _ = scores(model, z0, goal, actions)
    alone = [scores(model, z0, goal, actions[:, n : n + 1])[0][0, 0] for n in (0, 7, BLOCK + 4)]
    np.testing.assert_allclose(alone, together[0, [0, 7, BLOCK + 4]], rtol=1e-6)


def test_a_nan_candidate_costs_inf_and_leaves_its_block_mates_alone():
    model = tiny_world_model(critic=True)
    z0, goal, actions = random_problem(model, 2, BLOCK - 3, 5, seed=2)
    clean, _ = scores(model, z0, goal, actions, smooth_weight=0.0)
    actions[1, 4, 2, 0] = torch.nan  # one action of one candidate
    dirty, expect = scores(model, z0, goal, actions, smooth_weight=0.0)
    assert np.isnan(expect[1, 4])  # torch's J is NaN there; the kernel counts it as +inf
    assert dirty[1, 4] == np.inf
    keep = np.ones_like(dirty, bool)
    keep[1, 4] = False
    np.testing.assert_array_equal(dirty[keep], clean[keep])
    assert np.isfinite(dirty[keep]).all()


@pytest.mark.parametrize("rows", [1, 2, 9, BLOCK + 1, 3 * BLOCK])
def test_run_mlp_is_the_torch_mlp_on_any_number_of_rows(rows):
    torch.manual_seed(rows)
    net = mlp(32, 48, 3, 2)  # 48: four outputs at a time; 3: single outputs only
    x = torch.randn(rows, 32)
    with torch.no_grad():
        expect = net(x).numpy()
    got = run_mlp(pack_mlp(export_mlp(net), 32, "test"), x)
    assert got.shape == (rows, 3)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [ROW_BY_ROW, BLOCK + 3])  # row by row; in lanes
@pytest.mark.parametrize("norm", [False, True])
def test_a_nan_row_stays_nan_through_relu_and_layer_norm_alone_in_its_lane(norm, rows):
    torch.manual_seed(5)
    if norm:
        net = mlp(6, 9, 5, 2)  # Linear, LayerNorm + ReLU (one op), twice
    else:
        net = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 5))  # a plain ReLU
    x = torch.randn(rows, 6)
    x[1, 1] = torch.nan
    with torch.no_grad():
        expect = net(x).numpy()
    got = run_mlp(pack_mlp(export_mlp(net), 6, "test"), x)
    assert np.isnan(expect[1]).all() and np.isnan(got[1]).all()  # max(NaN, 0) is NaN
    others = np.arange(len(x)) != 1
    np.testing.assert_allclose(got[others], expect[others], rtol=1e-5, atol=1e-5)


def test_the_one_thread_path_plans_as_the_prange_path(monkeypatch):
    model = tiny_world_model(critic=True)
    z0, goal, _ = random_problem(model, 2, 1, 1, seed=4)
    decide = numba_planners._decide
    plans = []
    for serial in (True, False):  # the last argument: score the blocks on the calling thread
        serial_decide = lambda *args, s=serial: decide(*args[:-1], s)  # noqa: E731
        monkeypatch.setattr(numba_planners, "_decide", serial_decide)
        plans.append(make_numba_planner(model, planner_config("icem", horizon=5)).plan(z0, goal))
    torch.testing.assert_close(plans[0], plans[1], rtol=0, atol=1e-6)


def test_the_slp_vectoriser_is_on_before_any_kernel_compiles():
    # Numba's disk cache does not key on the flag: a kernel built without it would stay slow.
    assert numba.config.SLP_VECTORIZE == 1
