"""Goal-conditioned heads on the world model's latents: the critic (cost-to-go) and the actor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wmrobot.model.world_model import mlp


class Critic(nn.Module):
    """Estimated cost-to-go V(z, g) >= 0 from latent ``z`` to the goal latent ``goal_z``.

    Units: environment steps, discounted, i.e. V ~ (1 - gamma^k) / (1 - gamma) when the goal
    is k steps away (each step before reaching the goal costs 1); planners weigh it against
    their own per-step cost (see :class:`wmrobot.train.critic.CriticConfig`).

    Exactly: ``V = softplus(net([z, goal_z]))`` with ``net`` one ``nn.Sequential`` of
    Linear/LayerNorm/ReLU (:func:`~wmrobot.model.world_model.mlp`), ``[.,.]`` concatenation
    on the last axis and ``softplus(x) = log(1 + exp(x))``. z (..., D), goal_z (..., D) -> (...).
    """

    def __init__(self, latent_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = mlp(2 * latent_dim, hidden, 1, depth)

    def forward(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        z, goal_z = torch.broadcast_tensors(z, goal_z)
        return F.softplus(self.net(torch.cat([z, goal_z], dim=-1))).squeeze(-1)


class Actor(nn.Module):
    """Mode-1 policy: an action for latent ``z`` aiming at ``goal_z``.

    ``a = tanh(net([z, goal_z]))`` in [-1, 1] (the caller rescales to the action bounds);
    ``net`` is one Linear/LayerNorm/ReLU ``nn.Sequential``. z, goal_z (..., D) -> (..., A).
    """

    def __init__(self, latent_dim: int, action_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.latent_dim, self.action_dim = latent_dim, action_dim
        self.net = mlp(2 * latent_dim, hidden, action_dim, depth)

    def forward(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        z, goal_z = torch.broadcast_tensors(z, goal_z)
        return torch.tanh(self.net(torch.cat([z, goal_z], dim=-1)))
