"""MPPI over action sequences in latent space, with TD-MPC2-style elites and std bounds."""

from __future__ import annotations

import torch

from wmrobot.planners.config import MPPIConfig
from wmrobot.planners.refit import mppi_logit
from wmrobot.planners.sampling import SamplingPlanner, weighted_moments

__all__ = ["MPPI", "MPPIConfig"]


class MPPI(SamplingPlanner):
    """Model-predictive path integral control (TD-MPC2 style), batched over B problems.

    Each iteration weights the elites by softmax(-(cost - min cost) / ``temperature``) and
    refits mean and std to the weighted elites, std clamped to [``min_std``, ``max_std``].
    Returns the final mean.
    """

    def refit(self, mean, std, elites, elite_cost):
        logits = mppi_logit(elite_cost, elite_cost[:, :1], self.cfg.temperature)
        weights = torch.softmax(logits, dim=1)
        new_mean, new_std = weighted_moments(elites, weights)
        return new_mean, new_std.clamp(self.cfg.min_std, self.cfg.max_std)
