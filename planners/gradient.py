"""Gradient planning: Adam on the action sequence through the differentiable world model."""

from __future__ import annotations

import torch

from wmrobot.planners.base import Planner
from wmrobot.planners.cem import CEM

# atanh of the clipped ratio stays finite: an action on a bound starts at 0.999 of it.
_EDGE = 0.999


class GradientPlanner(Planner):
    """Adam (``lr``, ``grad_steps``) on an unbounded u with actions = mid + half * tanh(u),
    so every iterate is inside the bounds. Starts from the warm start (or mid-range), or from
    a CEM plan when ``refine_with_cem``. Returns the best iterate by the objective (the start
    if no iterate had a finite cost); non-finite gradients count as zero.
    """

    def __init__(self, dynamics, cfg, seed: int = 0) -> None:
        super().__init__(dynamics, cfg, seed)
        self.cem = CEM(dynamics, self.cfg, seed) if self.cfg.refine_with_cem else None
        if self.cem is not None:
            self.cem.rng = self.rng  # one stream of randomness per planner

    def plan(
        self, z0: torch.Tensor, goal_z: torch.Tensor, init_mean: torch.Tensor | None = None
    ) -> torch.Tensor:
        start = self.initial_mean(z0.shape[0], init_mean)
        if self.cem is not None:
            start = self.cem.plan(z0, goal_z, start)
        mid, half = (self.high + self.low) / 2, (self.high - self.low) / 2
        ratio = ((start - mid) / half.clamp_min(1e-12)).clamp(-_EDGE, _EDGE)
        u = torch.atanh(ratio).requires_grad_(True)
        adam = _Adam(u, self.cfg.lr)
        best, best_cost = start.clone(), torch.full_like(start[:, 0, 0], torch.inf)
        with torch.enable_grad():
            for step in range(self.cfg.grad_steps + 1):
                actions = mid + half * torch.tanh(u)
                cost = self.objective(z0, goal_z, actions[:, None])[:, 0]  # (B,)
                scored = self.finite_costs(cost.detach())
                better = scored < best_cost
                best = torch.where(better[:, None, None], actions.detach(), best)
                best_cost = torch.where(better, scored, best_cost)
                if step == self.cfg.grad_steps:
                    break
                (grad,) = torch.autograd.grad(cost.sum(), u)
                adam.step(grad.nan_to_num(0.0, 0.0, 0.0))
        return best.clamp(self.low, self.high)


class _Adam:
    """Adam (Kingma and Ba 2015) on one tensor, elementwise, so batch rows stay independent.
    Written out because ``torch.optim`` imports torch._dynamo on first use (~6 s on CPU)."""

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.m, self.v, self.t = torch.zeros_like(param), torch.zeros_like(param), 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        m_hat = self.m / (1 - b1**self.t)
        v_hat = self.v / (1 - b2**self.t)
        self.param.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))
