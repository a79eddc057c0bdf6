"""Receding-horizon control: plan, act on the first action, shift the plan to warm-start."""

from __future__ import annotations

import torch

from wmrobot.planners.mppi import MPPI


class RecedingHorizon:
    """Wraps a planner; ``act(z, goal_z)`` (B, D) -> the first actions (B, A).

    Between calls the previous plan, shifted by one step (last action repeated), seeds the
    next optimisation. ``reset()`` forgets it (call it at each new episode).
    """

    def __init__(self, planner: MPPI) -> None:
        self.planner = planner
        self.plan: torch.Tensor | None = None

    def reset(self) -> None:
        self.plan = None

    def keep(self, indices: torch.Tensor) -> None:
        """Keep the warm starts of these batch rows only (the others' episodes ended)."""
        if self.plan is not None:
            self.plan = self.plan[indices]

    def act(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        init = None
        if self.plan is not None and self.plan.shape[0] == z.shape[0]:
            init = torch.cat([self.plan[:, 1:], self.plan[:, -1:]], dim=1)
        self.plan = self.planner.plan(z, goal_z, init)
        return self.plan[:, 0]
