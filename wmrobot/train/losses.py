"""The JEPA training objective: multi-step latent prediction, VICReg terms, cost-head regression."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wmrobot.model.collapse import covariance_loss, variance_loss
from wmrobot.model.world_model import WorldModel


@dataclass
class LossWeights:
    prediction: float
    variance: float
    covariance: float
    cost: float


def jepa_loss(
    model: WorldModel,
    obs: torch.Tensor,
    actions: torch.Tensor,
    achieved: torch.Tensor,
    goal_obs: torch.Tensor,
    goal_achieved: torch.Tensor,
    w: LossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss on a batch of windows; returns the total and its parts for logging.

    obs (B, K+1, O), actions (B, K, A), achieved (B, K+1, G) goal-space positions along the
    window; goal_obs (B, O) hindsight goals drawn from the dataset, goal_achieved (B, G) theirs.
    """
    z = model.encode(obs)  # (B, K+1, D)
    targets = model.encode_target(obs[:, 1:])  # (B, K, D), stop-gradient
    imagined = model.rollout(z[:, 0], actions)  # autoregressive, K steps
    one_step = model.predict(z[:, :-1], actions)  # teacher-forced from the online latents
    prediction = F.mse_loss(imagined, targets) + F.mse_loss(one_step, targets)

    flat = z.reshape(-1, z.shape[-1])
    variance, covariance = variance_loss(flat), covariance_loss(flat)

    # Cost head: distance in goal space to a hindsight goal, on encoded and on imagined latents.
    goal_z = model.encode(goal_obs)[:, None]  # (B, 1, D)
    distance = torch.linalg.vector_norm(achieved - goal_achieved[:, None], dim=-1)  # (B, K+1)
    cost = F.mse_loss(model.task_cost(z, goal_z), distance) + F.mse_loss(
        model.task_cost(imagined.detach(), goal_z.detach()), distance[:, 1:]
    )

    total = (
        w.prediction * prediction
        + w.variance * variance
        + w.covariance * covariance
        + w.cost * cost
    )
    parts = {
        "loss": total.item(),
        "prediction": prediction.item(),
        "variance": variance.item(),
        "covariance": covariance.item(),
        "cost": cost.item(),
        "z_std": flat.detach().std(dim=0).mean().item(),
    }
    return total, parts
