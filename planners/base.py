"""What every planner shares: the objective, the action bounds, the warm start, the NaN guard."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from wmrobot.errors import ConfigError
from wmrobot.planners.config import PlannerConfig, as_config
from wmrobot.planners.dynamics import Dynamics


class Objective:
    """J of candidate action sequences: z0 (B, D), goal_z (B, D), actions (B, N, H, A) -> (B, N).

    Goal tasks: J = [sum_h w_h cost(z_h, g) + value_weight * value(z_H, g) + smooth_weight *
    sum_{h>=2} ||a_h - a_{h-1}||^2] / sum_h w_h, with w_h = 1 before the last step and
    ``terminal_weight`` at it. The value term counts only when the model has a critic
    (``has_value``) and ``value_weight > 0``; the smoothness term only when its weight is > 0.

    Reward tasks (``dynamics.task == "reward"``): J = -G, the predicted discounted return
    G = sum_{h<H} gamma^h C_h r(z_h, a_h) + gamma^H C_H V(z_H), with z_0 the start, C_0 = 1,
    C_{h+1} = C_h c(z_{h+1}) the probability the episode is still going, and V the model's
    return-to-go (``state_value``); ``goal_z`` is not used.
    """

    def __init__(self, dynamics: Dynamics, cfg: PlannerConfig) -> None:
        self.dynamics = dynamics
        self.reward_task = getattr(dynamics, "task", "goal") == "reward"
        if self.reward_task:
            gamma = float(dynamics.gamma)
            self.discounts = gamma ** torch.arange(cfg.horizon + 1, dtype=torch.float32)
        weights = torch.ones(cfg.horizon, device=torch.as_tensor(dynamics.action_low).device)
        weights[-1] = cfg.terminal_weight
        self.norm = float(weights.sum())
        self.step_weights = weights / self.norm
        has_value = getattr(dynamics, "has_value", False)
        self.value_weight = cfg.value_weight / self.norm if has_value else 0.0
        self.smooth_weight = cfg.smooth_weight / self.norm

    def __call__(self, z0: torch.Tensor, goal_z: torch.Tensor, actions: torch.Tensor):
        if self.reward_task:
            return -self.predicted_return(z0, actions)
        b, n = actions.shape[:2]
        goal = goal_z.repeat_interleave(n, 0)  # (B*N, D)
        z = self.dynamics.rollout(z0.repeat_interleave(n, 0), actions.flatten(0, 1))
        j = (self.dynamics.cost(z, goal[:, None]) * self.step_weights).sum(-1)  # (B*N,)
        if self.value_weight > 0:
            j = j + self.value_weight * self.dynamics.value(z[:, -1], goal)
        if self.smooth_weight > 0:
            diff = actions.flatten(0, 1).diff(dim=1)
            j = j + self.smooth_weight * diff.pow(2).sum((-2, -1))
        return j.view(b, n)

    def predicted_return(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """G of candidate sequences (see the class): z0 (B, D), actions (B, N, H, A) -> (B, N)."""
        b, n, h = actions.shape[:3]
        flat = actions.flatten(0, 1)
        start = z0.repeat_interleave(n, 0)
        z = self.dynamics.rollout(start, flat)  # (B*N, H, D): z_1 .. z_H
        before = torch.cat([start[:, None], z[:, :-1]], dim=1)  # z_0 .. z_{H-1}
        rewards = self.dynamics.reward(before, flat)  # (B*N, H)
        alive = torch.cumprod(self.dynamics.cont(z), dim=1)  # C_1 .. C_H
        alive_before = torch.cat([torch.ones_like(alive[:, :1]), alive[:, :-1]], dim=1)
        d = self.discounts.to(z.device)
        g = (d[:h] * alive_before * rewards).sum(-1)
        g = g + d[h] * alive[:, -1] * self.dynamics.state_value(z[:, -1])
        return g.view(b, n)


class Planner:
    """Base of the planners: ``plan(z0 (B, D), goal_z (B, D), init_mean (B, H, A) | None)``
    returns an action sequence (B, H, A), finite and inside the action bounds.

    Randomness comes from ``self.rng`` (NumPy, seeded), so one seed gives one plan. The
    controller calls ``reset()`` at new episodes, ``keep(indices)`` when some of a batch's
    episodes end and ``shift(steps)`` after executing steps of a plan; planners that remember
    nothing between decisions ignore them.
    """

    def __init__(self, dynamics: Dynamics, cfg: PlannerConfig, seed: int = 0) -> None:
        self.dynamics, self.cfg = dynamics, as_config(cfg)
        _check_fits(self.cfg, len(dynamics.action_low), dynamics.latent_dim)
        self.rng = np.random.default_rng(seed)
        self.objective = Objective(dynamics, self.cfg)
        self.low = torch.as_tensor(dynamics.action_low, dtype=torch.float32)
        self.high = torch.as_tensor(dynamics.action_high, dtype=torch.float32)
        self._warned = False

    def plan(
        self, z0: torch.Tensor, goal_z: torch.Tensor, init_mean: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget what was remembered from earlier decisions (a new episode starts)."""

    def refresh(self) -> None:
        """The model's weights changed (an online update): plan with the new ones. The torch
        planners call the model itself; a compiled backend re-reads its copy."""

    def keep(self, indices: torch.Tensor) -> None:
        """Keep the memory of these batch rows only (the others' episodes ended)."""

    def shift(self, steps: int) -> None:
        """The first ``steps`` actions of the last plan were executed."""

    def initial_mean(self, batch: int, init_mean: torch.Tensor | None) -> torch.Tensor:
        """The warm start clipped to the bounds, or mid-range: (B, H, A)."""
        if init_mean is not None:
            return init_mean.to(torch.float32).clamp(self.low, self.high)
        mid = (self.low + self.high) / 2
        return mid.expand(batch, self.cfg.horizon, -1).clone()

    def finite_costs(self, cost: torch.Tensor) -> torch.Tensor:
        """Non-finite costs become +inf (never chosen), with a warning once per planner."""
        finite = torch.isfinite(cost)
        if not finite.all():
            if not self._warned:
                warnings.warn(
                    "the model returned NaN/Inf costs: those candidates are ignored, and a batch "
                    "row with no finite candidate keeps its warm-start plan",
                    stacklevel=3,
                )
                self._warned = True
            cost = torch.where(finite, cost, torch.inf)
        return cost


def _check_fits(cfg: PlannerConfig, action_dim: int, latent_dim: int) -> None:
    """Refuse, in one line, a sampling population whose candidates alone (their actions and
    latent rollouts, float32, for one decision of one episode) exceed this machine's memory:
    allocating it would fail with a MemoryError deep in a rollout, or swap for ever."""
    if cfg.name == "grad":  # one sequence per episode, refined by gradient steps
        return
    need = 4 * cfg.samples * cfg.horizon * (action_dim + latent_dim)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # a platform that does not say
        return
    if need > total:
        raise ConfigError(
            f"planner.samples={cfg.samples} with planner.horizon={cfg.horizon} needs about "
            f"{need / 2**30:,.0f} GiB for one decision's candidates, more than this machine's "
            f"{total / 2**30:,.0f} GiB of memory; use fewer samples or a shorter horizon"
        )
