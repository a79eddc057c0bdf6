"""Toy latent models to plan with: a point mass z' = z + a, its cost the distance to the goal."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.planners import Objective, PlannerConfig, draw_noise


class PointMass:
    """z' = z + a in ``dim`` dimensions, actions in [low, high]; cost ||z - goal||."""

    has_value = False

    def __init__(self, dim: int = 2, low=-1.0, high=1.0) -> None:
        self.latent_dim = dim
        self.action_low = torch.as_tensor(low, dtype=torch.float32).expand(dim).clone()
        self.action_high = torch.as_tensor(high, dtype=torch.float32).expand(dim).clone()

    def step(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return z + a

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return z0[:, None] + actions.cumsum(dim=1)

    def cost(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(z - goal_z, dim=-1)

    def value(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the point mass has no critic (has_value is False)")


class Broken(PointMass):
    """Predicts ``bad`` (NaN or Inf) for every state, as a model far off its data can."""

    def __init__(self, bad: float) -> None:
        super().__init__()
        self.bad = bad

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.full((*actions.shape[:-1], self.latent_dim), self.bad) + 0 * actions.sum()


def tiny_world_model(
    critic: bool = True, seed: int = 0, action_dim: int = 2, **changes
) -> WorldModel:
    """An untrained world model (D=16, hidden 64, actions in [-1, 1]), with a critic;
    ``changes`` replace :class:`ModelConfig` fields."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        latent_dim=16,
        hidden=64,
        depth=2,
        goal_dim=8,
        ema=0.99,
        latent_weight=0.1,
        cost_weight=1.0,
        critic=critic,
    )
    return WorldModel(4, action_dim, replace(cfg, **changes)).eval()


def planner_config(name: str, **overrides) -> PlannerConfig:
    """A small budget that still solves the point mass; ``grad+cem`` is grad refining CEM."""
    values = dict(
        name=name,
        backend="torch",
        horizon=6,
        samples=64,
        iterations=4,
        elites=8,
        init_std=1.0,
        min_std=0.05,
        max_std=2.0,
        terminal_weight=2.0,
        grad_steps=30,
        lr=0.3,
    )
    if name == "grad+cem":
        values.update(name="grad", refine_with_cem=True, iterations=2)
    return PlannerConfig(**{**values, **overrides})


def scored_candidates(planner, z0, goal, init, seed: int):
    """The first iteration's candidates (B, N, H, A) and costs (B, N), rebuilt from the spec."""
    cfg = planner.cfg
    b, a_dim = z0.shape[0], init.shape[-1]
    noise = draw_noise(np.random.default_rng(seed), 1, b, cfg.samples, cfg.horizon, a_dim)[0]
    low, high = planner.low.numpy(), planner.high.numpy()
    mean = np.clip(init.numpy(), low, high)
    candidates = np.clip(mean[:, None] + cfg.init_std * noise, low, high)
    candidates[:, 0] = mean
    cost = Objective(planner.dynamics, cfg)(z0, goal, torch.from_numpy(candidates)).numpy()
    return candidates, cost


NAMES = ["cem", "icem", "mppi", "grad", "grad+cem"]
SAMPLING = ["cem", "icem", "mppi", "grad+cem"]
