"""Goal-conditioned heads on the world model's latents: the critic (cost-to-go) and the actor."""

from __future__ import annotations

import torch
from torch import nn

from wmrobot.model.layers import VALUE_EPS, mlp


class Critic(nn.Module):
    """Estimated cost-to-go V(z, g) >= 0 from latent ``z`` to the goal latent ``goal_z``.

    Units: discounted environment steps. Each step taken before the goal is reached costs 1,
    so a goal k steps away is worth (1 - gamma^k) / (1 - gamma) (gamma from
    :class:`~wmrobot.train.critic.CriticConfig`); a planner adds it, times a weight, to its
    own cost as the terminal cost.

    Exactly: ``V = sqrt(sum((phi(z) - phi(goal_z))^2, -1) + 1e-6)`` with ``phi`` one
    ``nn.Sequential`` of Linear/LayerNorm/ReLU (:func:`~wmrobot.model.layers.mlp`) into
    ``embed`` dimensions. A distance between embeddings, so V(g, g) ~ 0, V is symmetric and
    obeys the triangle inequality: values learnt on pairs seen in one episode carry over to
    pairs never seen together, which TD alone propagates slowly.
    z (..., D), goal_z (..., D) -> (...).
    """

    def __init__(self, latent_dim: int, hidden: int, depth: int, embed: int = 32) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.phi = mlp(latent_dim, hidden, embed, depth)

    def forward(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        diff = self.phi(z) - self.phi(goal_z)
        return torch.sqrt(diff.pow(2).sum(-1) + VALUE_EPS)


class Actor(nn.Module):
    """Mode-1 policy: an action for latent ``z`` aiming at ``goal_z``.

    Exactly: ``a = tanh(net(concat(z, goal_z)))`` in [-1, 1] (the caller rescales to the
    action bounds), ``net`` one Linear/LayerNorm/ReLU ``nn.Sequential``.
    z, goal_z (..., D) -> (..., A).
    """

    def __init__(self, latent_dim: int, action_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.latent_dim, self.action_dim = latent_dim, action_dim
        self.net = mlp(2 * latent_dim, hidden, action_dim, depth)

    def forward(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        z, goal_z = torch.broadcast_tensors(z, goal_z)
        return torch.tanh(self.net(torch.cat([z, goal_z], dim=-1)))
