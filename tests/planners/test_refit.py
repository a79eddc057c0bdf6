"""The refit rules: the Numba backend's refit of a row equals the torch planners' ``refit``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toys import PointMass, planner_config

from wmrobot.planners import TORCH_PLANNERS
from wmrobot.planners.numba.refit import CEM_KIND, ICEM_KIND, MPPI_KIND, refit_row
from wmrobot.planners.refit import mppi_logit, smooth

KINDS = {"mppi": MPPI_KIND, "cem": CEM_KIND, "icem": ICEM_KIND}


def elites_of(seed: int, batch: int = 3, count: int = 6, horizon: int = 4, a_dim: int = 2):
    """Random (mean, std, elites, elite costs sorted, the last two of row 1 infinite)."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform(-1, 1, (batch, horizon, a_dim)).astype(np.float32)
    std = rng.uniform(0.01, 1.5, (batch, horizon, a_dim)).astype(np.float32)
    elites = rng.uniform(-1, 1, (batch, count, horizon, a_dim)).astype(np.float32)
    cost = np.sort(rng.exponential(2.0, (batch, count)).astype(np.float32), axis=1)
    cost[1, -2:] = np.inf  # non-finite elites: CEM drops them, MPPI weighs them 0
    return mean, std, elites, cost


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("seed", [0, 1])
def test_the_numba_refit_is_the_torch_refit(name, seed):
    cfg = planner_config(name, temperature=0.7, alpha=0.3, min_std=0.1, max_std=1.2, elites=6)
    planner = TORCH_PLANNERS[name](PointMass(), cfg)
    mean, std, elites, cost = elites_of(seed)
    tensors = (torch.from_numpy(x) for x in (mean, std, elites, cost))
    expect_mean, expect_std = (x.numpy() for x in planner.refit(*tensors))
    got_mean, got_std = mean.copy(), std.copy()
    for b in range(len(mean)):
        refit_row(
            KINDS[name], got_mean[b], got_std[b], elites[b], cost[b], np.float32(cfg.temperature),
            np.float32(cfg.alpha), np.float32(cfg.min_std), np.float32(cfg.max_std),
        )  # fmt: skip
    np.testing.assert_allclose(got_mean, expect_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_std, expect_std, rtol=1e-5, atol=1e-6)
    assert np.abs(got_mean - mean).max() > 1e-2  # the refit moved the mean
    assert got_std.min() >= cfg.min_std and got_std.max() <= cfg.max_std


def test_the_shared_rules_on_tensors_and_scalars():
    old, new = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.0])
    torch.testing.assert_close(smooth(0.25, old, new), 0.25 * old + 0.75 * new)
    assert smooth(0.25, 1.0, 3.0) == pytest.approx(2.5)
    cost = torch.tensor([[0.5, 1.5, 2.5]])
    torch.testing.assert_close(mppi_logit(cost, cost[:, :1], 0.5), torch.tensor([[0.0, -2, -4]]))
