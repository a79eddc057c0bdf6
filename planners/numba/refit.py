"""The sampling planners' refit on the Numba backend: one batch row's new mean and std from
its elites. The rules written once (:mod:`wmrobot.planners.refit`) are compiled here; the
weighting and moments mirror the torch planners' ``refit`` and are tested equal to them."""

from __future__ import annotations

import numpy as np
from numba import njit

from wmrobot.planners.numba.kernels import FASTMATH
from wmrobot.planners.refit import mppi_logit, smooth

MPPI_KIND, CEM_KIND, ICEM_KIND = 0, 1, 2

_mppi_logit = njit(cache=True, fastmath=FASTMATH)(mppi_logit)
_smooth = njit(cache=True, fastmath=FASTMATH)(smooth)


@njit(cache=True, fastmath=FASTMATH)
def refit_row(kind, mean, std, elites, elite_cost, temperature, alpha, min_std, max_std):
    """Refit one row's mean and std (H, A) in place to its elites (K, H, A), sorted by cost
    (K,) with the best finite: MPPI (``kind``) weights them by softmax of
    :func:`~wmrobot.planners.refit.mppi_logit`; CEM and iCEM equally where finite, then
    :func:`~wmrobot.planners.refit.smooth` by ``alpha``; std clamped to [min_std, max_std]."""
    count, horizon, a_dim = elites.shape
    w = np.zeros(count, np.float32)
    for k in range(count):
        if kind == MPPI_KIND:
            w[k] = np.exp(_mppi_logit(elite_cost[k], elite_cost[0], temperature))
        elif np.isfinite(elite_cost[k]):
            w[k] = np.float32(1.0)
    w /= w.sum()
    for t in range(horizon):
        for j in range(a_dim):
            m = np.float32(0.0)
            for k in range(count):
                m += w[k] * elites[k, t, j]
            v = np.float32(0.0)
            for k in range(count):
                v += w[k] * (elites[k, t, j] - m) * (elites[k, t, j] - m)
            sd = np.sqrt(v)
            if kind != MPPI_KIND:
                m = _smooth(alpha, mean[t, j], m)
                sd = _smooth(alpha, std[t, j], sd)
            mean[t, j] = m
            std[t, j] = min(max(sd, min_std), max_std)
