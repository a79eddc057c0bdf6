"""Receding-horizon control: plan, execute the first action(s), shift the plan to warm-start."""

from __future__ import annotations

from collections.abc import Callable

import torch

from wmrobot.planners.base import Planner


class RecedingHorizon:
    """Wraps a planner; ``act(z, goal_z)`` (B, D) -> the actions to execute now (B, A).

    A plan is made every ``replan_every`` calls and its actions executed in turn; the next
    plan is warm-started from the previous one shifted by the executed steps (last action
    repeated). ``reset()`` forgets it (call it at each new episode); ``keep(indices)`` keeps
    the rows of a batch whose episodes go on.

    ``prior(z, goal_z)`` (B, D) -> (B, H, A), if given, proposes the starting mean of each
    new plan instead of the shifted plan (e.g. the Mode-1 actor rolled out through the model:
    the hybrid agent). The planner scores its starting mean among its first candidates, so
    a poor proposal costs samples, not the plan. (Choosing per row between the proposal and
    the shifted plan by the objective scored the same on the U-maze and took longer than the
    planning itself, in torch.)
    """

    def __init__(
        self,
        planner: Planner,
        replan_every: int = 1,
        prior: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.planner, self.replan_every, self.prior = planner, replan_every, prior
        self.plan: torch.Tensor | None = None
        self.step = 0  # actions executed from the current plan

    def reset(self) -> None:
        self.plan, self.step = None, 0
        self.planner.reset()

    def keep(self, indices: torch.Tensor) -> None:
        """Keep the warm starts of these batch rows only (the others' episodes ended)."""
        if self.plan is not None:
            self.plan = self.plan[indices]
        self.planner.keep(indices)

    def act(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        same_batch = self.plan is not None and self.plan.shape[0] == z.shape[0]
        if same_batch and self.step < self.replan_every:
            self.step += 1
            return self.plan[:, self.step - 1]
        init = None
        if same_batch:
            k = self.step
            init = torch.cat([self.plan[:, k:], self.plan[:, -1:].expand(-1, k, -1)], dim=1)
            self.planner.shift(k)
        if self.prior is not None:
            init = self.prior(z, goal_z).to(torch.float32)
        self.plan, self.step = self.planner.plan(z, goal_z, init), 1
        return self.plan[:, 0]
