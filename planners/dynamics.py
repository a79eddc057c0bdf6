"""The Dynamics protocol: all a planner may know of a world model (never the simulator)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Dynamics(Protocol):
    """A latent model to plan with.

    ``rollout`` (B, D), (B, H, A) -> (B, H, D); ``cost`` (..., D), (..., D) -> (...);
    ``action_low`` / ``action_high`` (A,) bound every action; ``latent_dim`` is D.
    """

    latent_dim: int
    action_low: torch.Tensor
    action_high: torch.Tensor

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor: ...

    def cost(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor: ...
