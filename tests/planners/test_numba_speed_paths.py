"""The Numba kernels' fast paths: blocks of candidates, both matrix-product forms, any widths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toys import planner_config, tiny_world_model

from wmrobot.model.world_model import WorldModel
from wmrobot.planners import Objective
from wmrobot.planners.numba_backend import BLOCK, LINEAR, LINEAR_T, export_model, score


def odd_world_model() -> WorldModel:
    """Widths that are multiples of nothing the kernels group by: 5 + 3 inputs, hidden 13 (rows
    of 4 with a remainder), a critic 37 wide (dot products over an odd width) into 7."""
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
    got = score(export_model(model), objective, z0, goal, actions)
    return got, expect


def random_problem(model, batch, count, horizon, seed=0):
    gen = torch.Generator().manual_seed(seed)
    d, a = model.latent_dim, model.action_dim
    z0, goal = torch.randn(batch, d, generator=gen), torch.randn(batch, d, generator=gen)
    actions = torch.rand(batch, count, horizon, a, generator=gen) * 2 - 1
    return z0, goal, actions


def test_odd_widths_use_both_forms_and_score_as_torch():
    model = odd_world_model()
    kinds = set(export_model(model).net.ops.tolist())
    assert {LINEAR, LINEAR_T} <= kinds  # narrow layers as rows, the critic's as dot products
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


@pytest.mark.parametrize("rows", [1, 2, 9])
def test_run_mlp_is_the_torch_mlp_on_any_number_of_rows(rows):
    from wmrobot.model.world_model import mlp
    from wmrobot.planners.numba_backend import export_mlp, run_mlp

    torch.manual_seed(rows)
    net = mlp(32, 48, 3, 2)  # 32 inputs: the dot-product form; 48: rows of 4 with the rest
    x = torch.randn(rows, 32)
    with torch.no_grad():
        expect = net(x).numpy()
    got = run_mlp(export_mlp(net, 32, "test"), x)
    assert got.shape == (rows, 3)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)
