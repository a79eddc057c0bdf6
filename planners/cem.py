"""The cross-entropy method over action sequences: refit a clipped Gaussian to the elites."""

from __future__ import annotations

import torch

from wmrobot.planners.refit import smooth
from wmrobot.planners.sampling import SamplingPlanner, weighted_moments


class CEM(SamplingPlanner):
    """CEM with a clipped Gaussian and smoothing, batched over B problems.

    Each iteration refits mean and std to the (unweighted) elites with a finite cost, then
    smooths: new = ``alpha`` * old + (1 - ``alpha``) * refit; std clamped to
    [``min_std``, ``max_std``]. Returns the final mean.
    """

    def refit(self, mean, std, elites, elite_cost):
        finite = torch.isfinite(elite_cost).float()
        elite_mean, elite_std = weighted_moments(elites, finite / finite.sum(1, keepdim=True))
        alpha = self.cfg.alpha
        new_std = smooth(alpha, std, elite_std).clamp(self.cfg.min_std, self.cfg.max_std)
        return smooth(alpha, mean, elite_mean), new_std
