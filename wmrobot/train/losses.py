"""The JEPA training objective: multi-step latent prediction against stop-gradient targets, an
anti-collapse term (VICReg or SIGReg), and the cost head's regression on hindsight goals."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wmrobot.model.collapse import covariance_loss, sigreg_loss, variance_loss
from wmrobot.model.world_model import WorldModel

ANTICOLLAPSE = ("vicreg", "sigreg", "none")


@dataclass
class LossWeights:
    prediction: float
    variance: float
    covariance: float
    cost: float
    sigreg: float = 1.0
    critic: float = 1.0


def jepa_loss(
    model: WorldModel,
    inputs: dict[str, torch.Tensor],
    actions: torch.Tensor,
    achieved: torch.Tensor,
    goal_inputs: dict[str, torch.Tensor],
    goal_achieved: torch.Tensor,
    w: LossWeights,
    anticollapse: str = "vicreg",
    stop_gradient: bool = True,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """Loss on a batch of windows; returns the total, its parts for logging, and the online
    latents (B, K+1, D) (the critic trains on them, detached).

    inputs: encoder inputs along the window, each (B, K+1, ...); actions (B, K, A); achieved
    (B, K+1, G) goal-space positions along the window; goal_inputs (B, ...) hindsight goals
    drawn from the dataset, goal_achieved (B, G) theirs. ``anticollapse`` picks the term that
    keeps the online latents spread: VICReg's variance + covariance (PLDM), SIGReg (LeJEPA),
    or none (then only the EMA target and the cost head stand against collapse).
    ``stop_gradient=False`` takes the targets from the online encoder with their gradient
    (PLDM's set-up): then only the anti-collapse term keeps the encoder from a constant.
    """
    z = model.encode(inputs)  # (B, K+1, D)
    if stop_gradient:
        targets = model.encode_target({k: v[:, 1:] for k, v in inputs.items()})
    else:
        targets = z[:, 1:]
    imagined = model.rollout(z[:, 0], actions)  # autoregressive, K steps
    one_step = model.predict_sequence(z[:, :-1], actions)  # teacher-forced, frame-causal
    prediction = F.mse_loss(imagined, targets) + F.mse_loss(one_step, targets)
    ensemble = member_loss(model, z.detach(), actions, targets)

    flat = z.reshape(-1, z.shape[-1])
    zero = flat.new_zeros(())
    variance = covariance = sigreg = zero
    if anticollapse == "vicreg":
        variance, covariance = variance_loss(flat), covariance_loss(flat)
    elif anticollapse == "sigreg":
        sigreg = sigreg_loss(flat, directions=32)  # more directions cost more, rank no better
    elif anticollapse != "none":
        raise ValueError(f"anticollapse={anticollapse!r}; choose from {ANTICOLLAPSE}")

    # Cost head: distance in goal space to a hindsight goal, on encoded and on imagined latents.
    goal_z = model.encode(goal_inputs)[:, None]  # (B, 1, D)
    distance = torch.linalg.vector_norm(achieved - goal_achieved[:, None], dim=-1)  # (B, K+1)
    cost = F.mse_loss(model.task_cost(z, goal_z), distance) + F.mse_loss(
        model.task_cost(imagined.detach(), goal_z.detach()), distance[:, 1:]
    )

    total = (
        w.prediction * (prediction + ensemble)
        + w.variance * variance
        + w.covariance * covariance
        + w.sigreg * sigreg
        + w.cost * cost
    )
    parts = {
        "loss": total.item(),
        "prediction": prediction.item(),
        **({"ensemble": ensemble.item()} if len(model.members) else {}),
        "variance": variance.item(),
        "covariance": covariance.item(),
        "sigreg": sigreg.item(),
        "cost": cost.item(),
        "z_std": flat.detach().std(dim=0).mean().item(),
    }
    return total, parts, z


def member_loss(
    model: WorldModel,
    z: torch.Tensor,
    actions: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The prediction loss of the ensemble's members beyond the first, summed: each rolled out
    from ``z[:, 0]`` through ``actions`` (B, K, A) and teacher-forced on ``z[:, :-1]``, against
    ``targets`` (B, K, D). ``z`` (B, K+1, D) comes detached, so the members learn the latent
    space without shaping it. ``weights`` (K,) weigh the steps (a reward model's rho), else
    the mean. 0 without members."""
    total = z.new_zeros(())
    for member in model.members:
        for predicted in (member.rollout(z[:, 0], actions), member(z[:, :-1], actions)):
            per_step = (predicted - targets).pow(2).mean(-1).mean(0)  # (K,)
            total = total + (per_step.mean() if weights is None else (per_step * weights).sum())
    return total
