"""The Dynamics protocol: all a planner may know of a world model (never the simulator)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Dynamics(Protocol):
    """A latent model to plan with (goal tasks).

    ``rollout`` (B, D), (B, H, A) -> (B, H, D); ``cost`` (..., D), (..., D) -> (...);
    ``value`` (..., D), (..., D) -> (...) the cost-to-go past the horizon, called only when
    ``has_value``; ``action_low`` / ``action_high`` (A,) bound every action; ``latent_dim``
    is D. Reward tasks (``task == "reward"``) add ``gamma``, ``reward(z, a)``, ``cont(z)``,
    ``state_value(z)``, ``predict(z, a)`` and ``policy_action(z, generator)`` (the objective
    and the policy prior of :mod:`wmrobot.planners.base` and ``sampling``).

    Optional: ``export()`` -> a :class:`ModelExport`, the plain arrays the Numba backend runs
    (a model without it plans on torch only).
    """

    latent_dim: int
    action_low: torch.Tensor
    action_high: torch.Tensor
    has_value: bool

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor: ...

    def cost(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor: ...

    def value(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor: ...


class LayerExport(Protocol):
    """One exported MLP layer: ``kind`` "linear" (``weight`` (out, in), ``bias`` (out,)),
    "layernorm" (``weight`` gamma, ``bias`` beta, ``eps``), "relu", or any other name (which
    the Numba backend refuses)."""

    kind: str
    weight: np.ndarray | None
    bias: np.ndarray | None
    eps: float


class ModelExport(Protocol):
    """What the Numba backend reads of ``dynamics.export()``; an MLP is a sequence of
    :class:`LayerExport`, None where the model has none (or not as an MLP).

    rollout: z' = z + predictor([z, a]) when ``predictor_kind`` is "mlp"; cost(z, g) =
    latent_weight * mean((z - g)^2) + cost_weight * sqrt(||cost_head(z) - cost_head(g)||^2 +
    cost_eps); value(z, g) = sqrt(||critic(z) - critic(g)||^2 + value_eps).

    Reward tasks (``task`` "reward"; a goal task's export may omit these): reward(z, a) =
    scalar(reward_head([z, a]), reward_scale); cont(z) = sigmoid(continuation(z)[0]), 1 where
    ``continuation`` is None; the state value V(z) = mean_i scalar(q_heads[i]([z, u]),
    value_scale) with u = mid + half * tanh(m) the policy's mode, (m, s) the two halves of
    policy(z); a policy sample is mid + half * tanh(m + eps * exp(log_std)), log_std =
    log_std_min + (log_std_max - log_std_min) * (tanh(s) + 1) / 2; (mid, half) of the action
    bounds. scalar(out, scale) is out[0] * scale if ``scalar_kind`` is "regression", else
    (two-hot) sign(x) * (exp(|x|) - 1) of x = sum(softmax(out) * points). ``gamma`` discounts.
    """

    latent_dim: int
    action_dim: int
    predictor_kind: str
    predictor: tuple[LayerExport, ...] | None
    cost_head: tuple[LayerExport, ...] | None
    latent_weight: float
    cost_weight: float
    cost_eps: float
    critic: tuple[LayerExport, ...] | None
    value_eps: float
    task: str
    reward_head: tuple[LayerExport, ...] | None
    continuation: tuple[LayerExport, ...] | None
    q_heads: tuple[tuple[LayerExport, ...], ...]
    policy: tuple[LayerExport, ...] | None
    scalar_kind: str | None
    points: np.ndarray
    reward_scale: float
    value_scale: float
    gamma: float
    log_std_min: float
    log_std_max: float
