"""Agents with a stable-baselines3-like ``predict``: Mode-1 (the actor), Mode-2 (planning in
latent space), the hybrid (the planner seeded by the actor), random."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from wmrobot.errors import ConfigError
from wmrobot.model.fast import FastActor
from wmrobot.model.world_model import WorldModel
from wmrobot.planners import PlannerConfig, RecedingHorizon, as_config, make_planner

Obs = dict[str, np.ndarray]


def _batched(obs: Obs) -> tuple[Obs, bool]:
    single = np.asarray(obs["observation"]).ndim == 1
    return ({k: np.atleast_2d(v) for k, v in obs.items()} if single else obs), single


MODES = ("1", "2", "hybrid")


def encode_goal(
    model: WorldModel, obs: Obs, goal_observation: Callable[[np.ndarray], np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents of a batch of observations and of their goals: (B, D), (B, D)."""
    z = model.encode(torch.as_tensor(obs["observation"], dtype=torch.float32))
    goal = goal_observation(obs["desired_goal"])
    return z, model.encode(torch.as_tensor(goal, dtype=torch.float32))


@torch.no_grad()
def actor_plan(model: WorldModel, z: torch.Tensor, goal_z: torch.Tensor, horizon: int):
    """The actor's proposal: its actions along its own imagined rollout, (B, H, A)."""
    state = model.predictor.init_state(z)
    actions = []
    for _ in range(horizon):
        a = model.act(z, goal_z)
        z, state = model.predictor.step(z, a, state)
        actions.append(a)
    return torch.stack(actions, dim=1)


class ActorAgent:
    """Mode-1: encode the observation and the goal, one pass of the actor head, act.

    State MLP models run in NumPy (:class:`~wmrobot.model.fast.FastActor`, the same actions
    up to float32 rounding, ~10x less time for one env); others, or ``fast=False``, in torch.
    """

    def __init__(
        self,
        model: WorldModel,
        goal_observation: Callable[[np.ndarray], np.ndarray],
        fast: bool = True,
    ) -> None:
        if model.actor is None:
            raise ConfigError(
                "agent.mode=1 needs a model with an actor head; make one with "
                "`wmrobot distill checkpoint=DIR` and plan with the checkpoint it writes"
            )
        self.model = model.eval()
        self.goal_observation = goal_observation
        self.fast = FastActor.build(model) if fast else None

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def predict(
        self, obs: Obs, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        obs, single = _batched(obs)
        if self.fast is not None:
            goal = self.goal_observation(obs["desired_goal"])
            action = self.fast(obs["observation"], goal)
        else:
            z, goal_z = encode_goal(self.model, obs, self.goal_observation)
            action = self.model.act(z, goal_z).numpy()
        return (action[0] if single else action), None


class PlanningAgent:
    """Mode-2: encode the observation and the goal, plan in latent space, act.

    ``planner`` names the planner (CEM, iCEM, MPPI or gradient) and its budget; the agent
    replans every ``planner.replan_every`` steps, warm-started. ``goal_observation`` maps
    ``desired_goal`` (B, G) to the observation the agent would have at the goal (B, O), e.g.
    ``env.unwrapped.goal_observation``; the planner sees only latents. ``hybrid``: each plan
    starts from the actor's proposal (:func:`actor_plan`) instead of the shifted last plan
    (the model needs an actor head).
    """

    def __init__(
        self,
        model: WorldModel,
        planner: PlannerConfig,
        goal_observation: Callable[[np.ndarray], np.ndarray],
        seed: int = 0,
        hybrid: bool = False,
    ) -> None:
        self.model = model.eval()
        self.goal_observation = goal_observation
        planner = as_config(planner)
        prior = None
        if hybrid:
            if model.actor is None:
                raise ConfigError(
                    "agent.mode=hybrid needs a model with an actor head; make one with "
                    "`wmrobot distill checkpoint=DIR` and plan with the checkpoint it writes"
                )
            horizon = planner.horizon
            prior = lambda z, goal_z: actor_plan(model, z, goal_z, horizon)  # noqa: E731
        self.controller = RecedingHorizon(
            make_planner(model, planner, seed), planner.replan_every, prior
        )

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
        z, goal_z = encode_goal(self.model, obs, self.goal_observation)
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
