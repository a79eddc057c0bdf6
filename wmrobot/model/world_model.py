"""The JEPA world model: encoder, EMA target encoder, action-conditioned predictor, cost head."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from wmrobot.datasets.store import STD_FLOOR


@dataclass
class ModelConfig:
    """Sizes and coefficients of :class:`WorldModel` (``configs/model/*.yaml`` fills them)."""

    latent_dim: int
    hidden: int
    depth: int
    goal_dim: int
    ema: float
    latent_weight: float
    cost_weight: float


def mlp(inp: int, hidden: int, out: int, depth: int) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden``, LayerNorm, ReLU (Mish costs 16x more on CPU)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inp if i == 0 else hidden, hidden), nn.LayerNorm(hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden if depth else inp, out))
    return nn.Sequential(*layers)


class WorldModel(nn.Module):
    """A latent world model over a vector observation, in the vocabulary of DESIGN.md section 4.

    ``encode`` (B, ..., O) -> (B, ..., D); ``encode_target`` is its EMA copy, the source of
    prediction targets (no gradient). ``predict`` is one residual step
    z' = z + f(z, a); ``rollout`` (B, D), (B, H, A) -> (B, H, D). ``cost(z, goal_z)`` is the
    intrinsic cost: a weighted latent distance to the goal plus the learned cost head.

    The cost head embeds a latent into a small goal space, g(z) (..., goal_dim), and predicts
    the task cost as ||g(z) - g(goal_z)||: a metric by construction, trained to match the
    distance between achieved goals, and cheap enough to score every imagined state.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        cfg: ModelConfig,
        obs_mean: torch.Tensor | None = None,
        obs_std: torch.Tensor | None = None,
        action_low: torch.Tensor | None = None,
        action_high: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.action_dim, self.latent_dim = obs_dim, action_dim, cfg.latent_dim
        self.register_buffer("obs_mean", torch.zeros(obs_dim) if obs_mean is None else obs_mean)
        self.register_buffer("obs_std", torch.ones(obs_dim) if obs_std is None else obs_std)
        self.register_buffer(
            "action_low", -torch.ones(action_dim) if action_low is None else action_low
        )
        self.register_buffer(
            "action_high", torch.ones(action_dim) if action_high is None else action_high
        )
        self.encoder = mlp(obs_dim, cfg.hidden, cfg.latent_dim, cfg.depth)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = mlp(cfg.latent_dim + action_dim, cfg.hidden, cfg.latent_dim, cfg.depth)
        self.cost_head = mlp(cfg.latent_dim, cfg.hidden, cfg.goal_dim, 1)

    def config_dict(self) -> dict:
        return {"obs_dim": self.obs_dim, "action_dim": self.action_dim, **asdict(self.cfg)}

    def _normalise(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std.clamp_min(STD_FLOOR)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(self._normalise(obs))

    @torch.no_grad()
    def encode_target(self, obs: torch.Tensor) -> torch.Tensor:
        return self.target_encoder(self._normalise(obs))

    def predict(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return z + self.predictor(torch.cat([z, a], dim=-1))

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Imagine ``H`` steps: z0 (..., D), actions (..., H, A) -> latents (..., H, D)."""
        zs, z = [], z0
        for t in range(actions.shape[-2]):
            z = self.predict(z, actions[..., t, :])
            zs.append(z)
        return torch.stack(zs, dim=-2)

    def task_cost(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        """The cost head's estimate of the task cost: (..., D), (..., D) -> (...)."""
        diff = self.cost_head(z) - self.cost_head(goal_z)
        return torch.sqrt(diff.pow(2).sum(-1) + 1e-8)

    def cost(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        """Intrinsic cost of being at ``z`` when aiming for ``goal_z``: (..., D) -> (...)."""
        distance = (z - goal_z).pow(2).mean(-1)
        return self.cfg.latent_weight * distance + self.cfg.cost_weight * self.task_cost(z, goal_z)

    @torch.no_grad()
    def update_target(self, momentum: float | None = None) -> None:
        """EMA step of the target encoder towards the online encoder."""
        m = self.cfg.ema if momentum is None else momentum
        for p_t, p in zip(self.target_encoder.parameters(), self.encoder.parameters(), strict=True):
            p_t.lerp_(p, 1.0 - m)
