"""iCEM (Pinneri et al. 2020): CEM with colored noise, a shrinking population and elite reuse."""

from __future__ import annotations

import torch

from wmrobot.planners.cem import CEM
from wmrobot.planners.config import PlannerConfig


def population_sizes(cfg: PlannerConfig) -> list[int]:
    """Samples drawn at each iteration: N_i = max(2 * elites, int(samples * decay^-i))."""
    return [max(2 * cfg.elites, int(cfg.samples * cfg.decay**-i)) for i in range(cfg.iterations)]


def kept_elites(cfg: PlannerConfig) -> int:
    """How many of the best elites are carried to the next iteration and the next decision."""
    return int(cfg.keep_elites * cfg.elites)


class ICEM(CEM):
    """Improved CEM: CEM's refit on noise colored by 1/f^``beta`` along the horizon, whose
    population decays by ``decay`` per iteration.

    The ``kept_elites(cfg)`` best elites of an iteration join the next iteration's candidates;
    those of a decision's last iteration, shifted by the executed steps (last action
    repeated), join the first iteration of the next warm-started decision. As in the paper,
    the plan returned is the best candidate scored during the decision (the warm start if
    none had a finite cost), not the final mean.
    """

    def __init__(self, dynamics, cfg, seed: int = 0) -> None:
        super().__init__(dynamics, cfg, seed)
        self.n_keep = kept_elites(self.cfg)
        self.memory: torch.Tensor | None = None  # (B, n_keep, H, A) from the last decision

    def populations(self) -> list[int]:
        return population_sizes(self.cfg)

    def reset(self) -> None:
        self.memory = None

    def keep(self, indices: torch.Tensor) -> None:
        if self.memory is not None:
            self.memory = self.memory[indices]

    def shift(self, steps: int) -> None:
        if self.memory is not None:
            last = self.memory[:, :, -1:].expand(-1, -1, steps, -1)
            self.memory = torch.cat([self.memory[:, :, steps:], last], dim=2)

    def begin(self, mean: torch.Tensor, warm: bool) -> None:
        reuse = warm and self.memory is not None and self.memory.shape[0] == mean.shape[0]
        self.carried = self.memory if reuse else None
        self.best = mean.clone()
        self.best_cost = torch.full(mean.shape[:1], torch.inf, device=mean.device)

    def extra(self, candidates: torch.Tensor, iteration: int) -> torch.Tensor:
        if self.carried is None or self.n_keep == 0:
            return candidates
        return torch.cat([candidates, self.carried], dim=1)

    def observe(self, elites: torch.Tensor, elite_cost: torch.Tensor) -> None:
        better = elite_cost[:, 0] < self.best_cost
        self.best = torch.where(better[:, None, None], elites[:, 0], self.best)
        self.best_cost = torch.where(better, elite_cost[:, 0], self.best_cost)
        self.carried = elites[:, : self.n_keep]

    def result(self, mean: torch.Tensor) -> torch.Tensor:
        self.memory = self.carried if self.n_keep else None
        return self.best
