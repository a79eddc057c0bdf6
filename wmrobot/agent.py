"""Agents with a stable-baselines3-like ``predict``: Mode-2 (planning in latent space), random."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from wmrobot.model.world_model import WorldModel
from wmrobot.planners import PlannerConfig, RecedingHorizon, as_config, make_planner

Obs = dict[str, np.ndarray]


def _batched(obs: Obs) -> tuple[Obs, bool]:
    single = np.asarray(obs["observation"]).ndim == 1
    return ({k: np.atleast_2d(v) for k, v in obs.items()} if single else obs), single


class PlanningAgent:
    """Mode-2: encode the observation and the goal, plan in latent space, act.

    ``planner`` names the planner (CEM, iCEM, MPPI or gradient) and its budget; the agent
    replans every ``planner.replan_every`` steps, warm-started. ``goal_observation`` maps
    ``desired_goal`` (B, G) to the observation the agent would have at the goal (B, O), e.g.
    ``env.unwrapped.goal_observation``; the planner sees only latents.
    """

    def __init__(
        self,
        model: WorldModel,
        planner: PlannerConfig,
        goal_observation: Callable[[np.ndarray], np.ndarray],
        seed: int = 0,
    ) -> None:
        self.model = model.eval()
        self.goal_observation = goal_observation
        planner = as_config(planner)
        self.controller = RecedingHorizon(make_planner(model, planner, seed), planner.replan_every)

    def reset(self) -> None:
        self.controller.reset()

    def keep(self, indices: np.ndarray) -> None:
        """Continue with these rows of the batch only (the other episodes ended)."""
        self.controller.keep(torch.as_tensor(indices, dtype=torch.long))

    @torch.no_grad()
    def predict(
        self, obs: Obs, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        obs, single = _batched(obs)
        z = self.model.encode(torch.as_tensor(obs["observation"], dtype=torch.float32))
        goal = self.goal_observation(obs["desired_goal"])
        goal_z = self.model.encode(torch.as_tensor(goal, dtype=torch.float32))
        action = self.controller.act(z, goal_z).numpy()
        return (action[0] if single else action), None


class RandomAgent:
    """Uniform random actions, seeded: the floor every method must clear."""

    def __init__(self, low: np.ndarray, high: np.ndarray, seed: int = 0) -> None:
        self.low, self.high = np.asarray(low), np.asarray(high)
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def predict(
        self, obs: Obs, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        obs, single = _batched(obs)
        n = len(obs["observation"])
        action = self.rng.uniform(self.low, self.high, size=(n, len(self.low))).astype(np.float32)
        return (action[0] if single else action), None
