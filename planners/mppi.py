"""MPPI over action sequences in latent space, with TD-MPC2-style elites and std bounds."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from wmrobot.planners.dynamics import Dynamics


@dataclass
class MPPIConfig:
    horizon: int
    samples: int
    iterations: int
    elites: int
    temperature: float
    init_std: float
    min_std: float
    max_std: float
    terminal_weight: float


class MPPI:
    """Model-predictive path integral planner, batched over B problems at once.

    ``plan(z0 (B, D), goal_z (B, D), init_mean (B, H, A) or None)`` returns the optimised
    mean action sequence (B, H, A), always inside the action bounds. The objective is the
    model's cost summed over the horizon, the last step weighted by ``terminal_weight``.
    """

    def __init__(self, dynamics: Dynamics, cfg: MPPIConfig, seed: int = 0) -> None:
        if cfg.elites > cfg.samples:
            raise ValueError(f"elites ({cfg.elites}) must not exceed samples ({cfg.samples})")
        self.model, self.cfg = dynamics, cfg
        self.generator = torch.Generator().manual_seed(seed)
        weights = torch.ones(cfg.horizon)
        weights[-1] = cfg.terminal_weight
        self.step_weights = weights / weights.sum()

    @torch.no_grad()
    def objective(self, z0: torch.Tensor, goal_z: torch.Tensor, actions: torch.Tensor):
        """Cost of each candidate: z0 (B, D), goal_z (B, D), actions (B, N, H, A) -> (B, N)."""
        b, n = actions.shape[:2]
        z = self.model.rollout(z0.repeat_interleave(n, 0), actions.flatten(0, 1))  # (B*N, H, D)
        c = self.model.cost(z, goal_z.repeat_interleave(n, 0)[:, None])  # (B*N, H)
        return (c * self.step_weights).sum(-1).view(b, n)

    @torch.no_grad()
    def plan(
        self, z0: torch.Tensor, goal_z: torch.Tensor, init_mean: torch.Tensor | None = None
    ) -> torch.Tensor:
        cfg = self.cfg
        low, high = self.model.action_low, self.model.action_high
        b, a_dim = z0.shape[0], low.shape[0]
        mean = torch.zeros(b, cfg.horizon, a_dim) if init_mean is None else init_mean.clone()
        std = torch.full_like(mean, cfg.init_std)
        for _ in range(cfg.iterations):
            noise = torch.randn(b, cfg.samples, cfg.horizon, a_dim, generator=self.generator)
            actions = (mean[:, None] + std[:, None] * noise).clamp(low, high)
            actions[:, 0] = mean.clamp(low, high)  # keep the incumbent among the candidates
            cost = self.objective(z0, goal_z, actions)
            if not torch.isfinite(cost).all():
                warnings.warn(
                    "the model returned NaN/Inf costs; ignoring those samples", stacklevel=2
                )
                cost = torch.nan_to_num(cost, nan=torch.inf, posinf=torch.inf)
            elite_cost, idx = cost.topk(cfg.elites, dim=1, largest=False)  # (B, K)
            elites = actions.gather(1, idx[..., None, None].expand(-1, -1, cfg.horizon, a_dim))
            best = elite_cost[:, :1]
            w = torch.softmax(-(elite_cost - best) / cfg.temperature, dim=1)[..., None, None]
            w = torch.nan_to_num(w, nan=1.0 / cfg.elites)
            mean = (w * elites).sum(1)
            std = ((w * (elites - mean[:, None]) ** 2).sum(1)).sqrt()
            std = std.clamp(cfg.min_std, cfg.max_std)
        return mean.clamp(low, high)
