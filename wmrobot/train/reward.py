"""Training a reward-task world model: the JEPA latent prediction plus reward, continuation and
TD value losses along imagined windows, and the policy prior's update (TD-MPC2's recipe, with
the EMA target encoder of the goal models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from wmrobot.datasets import EpisodeStore, WindowSampler
from wmrobot.errors import check_range
from wmrobot.model.collapse import covariance_loss, sigreg_loss, variance_loss
from wmrobot.model.world_model import WorldModel
from wmrobot.train.data import REWARD_KEYS, check_reward_dataset, to_device
from wmrobot.train.losses import LossWeights, member_loss


@dataclass
class RewardLossConfig:
    """Weights and rates of the reward-task losses (``model.train.reward``).

    Each step t of a window counts ``rho``^t. ``tau``: the Polyak step of the Q target
    networks; ``entropy``: the policy's entropy bonus per action dimension, its Q term divided
    by a running scale of the values (the 5-95 % range), so one setting fits every env.
    ``td_lambda``: 0 is TD-MPC2's one-step target; above 0, the lambda-return along the
    window's recorded rewards (Peng's Q(lambda)), which carries an episode's end back ``horizon``
    steps per target update instead of one.
    """

    prediction: float = 20.0
    reward: float = 0.1
    value: float = 0.1
    continuation: float = 1.0
    rho: float = 0.5
    tau: float = 0.01
    entropy: float = 1e-4
    policy_lr: float = 3e-4
    td_lambda: float = 0.0

    def __post_init__(self) -> None:
        for key in ("prediction", "reward", "value", "continuation", "entropy"):
            check_range(f"model.train.reward.{key}", getattr(self, key), 0)
        check_range("model.train.reward.rho", self.rho, 0, 1, closed=False)
        check_range("model.train.reward.tau", self.tau, 0, 1, closed=False)
        check_range("model.train.reward.policy_lr", self.policy_lr, 0, closed=False)
        check_range("model.train.reward.td_lambda", self.td_lambda, 0, 1)


def reward_loss(
    model: WorldModel,
    inputs: dict[str, torch.Tensor],
    actions: torch.Tensor,
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    cfg: RewardLossConfig,
    loss_weights: LossWeights,
    anticollapse: str = "vicreg",
    gen: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """The world-model loss on windows: inputs (B, K+1, ...), actions (B, K, A), rewards and
    terminated (B, K); returns (loss, parts, imagined latents (B, K+1, D) detached, for the
    policy update).

    The encoder's first latent is rolled out through the actions (autoregressive); step t's
    imagined latent is pulled to the EMA target encoding of row t+1 (JEPA), and predicts the
    reward of step t, the continuation after it, and Q(z_t, a_t) against the TD target
    r_t + gamma (1 - terminated_t) min_i Q'_i(z'_{t+1}, a'), with z' the target encoding and
    a' sampled from the policy.
    """
    k = actions.shape[1]
    z0 = model.encode({n: v[:, 0] for n, v in inputs.items()})
    with torch.no_grad():
        targets = model.encode_target({n: v[:, 1:] for n, v in inputs.items()})  # (B, K, D)
    imagined = model.rollout(z0, actions)  # (B, K, D)
    zs = torch.cat([z0[:, None], imagined], dim=1)  # (B, K+1, D)
    weights = cfg.rho ** torch.arange(k, dtype=z0.dtype, device=z0.device)
    weights = weights / weights.sum()

    def weighted(per_step: torch.Tensor) -> torch.Tensor:  # (B, K) -> ()
        return (per_step.mean(0) * weights).sum()

    prediction = weighted((imagined - targets).pow(2).mean(-1))
    if len(model.members):  # the ensemble learns the same steps on the detached latents
        z_in = torch.cat([z0[:, None], targets], dim=1).detach()
        prediction = prediction + member_loss(model, z_in, actions, targets, weights)
    za = torch.cat([zs[:, :-1], actions], dim=-1)
    reward = weighted(model.scalar.loss(model.reward_head(za), rewards))
    with torch.no_grad():
        following, _ = model.policy.sample(targets, gen)
        mid, half = model.action_scale()
        q_next = model.q_values(targets, mid + following * half, target=True).min(0).values
        td = lambda_returns(rewards, terminated, q_next, model.gamma, cfg.td_lambda)
    q_out = model.q(zs[:, :-1], actions)  # (n, B, K, outputs)
    value = weighted(model.value_scalar.loss(q_out, td[None].expand(len(q_out), -1, -1)).mean(0))
    total = cfg.prediction * prediction + cfg.reward * reward + cfg.value * value
    parts = {"prediction": prediction.item(), "reward": reward.item(), "value": value.item()}
    if model.continuation is not None:
        # rho-weighted like every other term (TD-MPC2). A terminal step is always the last of
        # its window, so this weighs it least: measured on InvertedPendulum (seed 0, 2k env
        # steps), the unweighted mean returned 106 and this 1000, the head over-predicting ends.
        logit = model.continuation(imagined)[..., 0]
        cont = weighted(
            F.binary_cross_entropy_with_logits(logit, 1 - terminated.float(), reduction="none")
        )
        total = total + cfg.continuation * cont
        parts["continuation"] = cont.item()
    flat = zs.reshape(-1, zs.shape[-1])
    if anticollapse == "vicreg":  # weighted by model.train.loss, as the goal models' term
        total = total + loss_weights.variance * variance_loss(flat)
        total = total + loss_weights.covariance * covariance_loss(flat)
    elif anticollapse == "sigreg":
        total = total + loss_weights.sigreg * sigreg_loss(flat, directions=32)
    parts["loss"] = total.item()
    parts["z_std"] = flat.detach().std(dim=0).mean().item()
    return total, parts, zs.detach()


def lambda_returns(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    bootstrap: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Targets (B, K) of the window's steps: G_t = r_t + gamma (1 - d_t) ((1 - lam) V_{t+1} +
    lam G_{t+1}), with V_{t+1} = ``bootstrap[:, t]`` and G_K = V_K; lam = 0 is the one-step
    TD target. A terminal step ends its window, so nothing crosses an episode's end."""
    alive = 1 - terminated.to(rewards.dtype)
    out = torch.empty_like(rewards)
    following = bootstrap[:, -1]
    for t in range(rewards.shape[1] - 1, -1, -1):
        mixed = (1 - lam) * bootstrap[:, t] + lam * following
        out[:, t] = following = rewards[:, t] + gamma * alive[:, t] * mixed
    return out


class ValueScale:
    """A running scale of the Q values (the 5-95 % range, smoothed), at least 1: the policy's
    loss divides by it, so its entropy bonus weighs the same for small and large rewards."""

    def __init__(self, rate: float = 0.01) -> None:
        self.rate, self.value = rate, torch.ones(())

    def update(self, q: torch.Tensor) -> torch.Tensor:
        lo, hi = torch.quantile(q.detach().float().flatten(), torch.tensor([0.05, 0.95]))
        self.value = torch.lerp(self.value, (hi - lo).clamp_min(1.0), self.rate)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = state["value"]


def policy_loss(
    model: WorldModel,
    zs: torch.Tensor,
    cfg: RewardLossConfig,
    scale: ValueScale,
    gen: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The policy prior's loss on detached latents (B, K+1, D): maximise the mean Q of its
    sampled action (reparameterised) plus the entropy bonus; Q's gradient reaches only it."""
    u, entropy = model.policy.sample(zs, gen)
    mid, half = model.action_scale()
    q = model.value_scalar.value(model.q(zs, mid + u * half)).mean(0)  # (B, K+1)
    s = scale.update(q)
    weights = cfg.rho ** torch.arange(zs.shape[1], dtype=zs.dtype, device=zs.device)
    per_step = (-(q / s) - cfg.entropy * entropy).mean(0)
    loss = (per_step * weights / weights.sum()).sum()
    return loss, {"policy": loss.item(), "entropy": entropy.mean().item(), "q": q.mean().item()}


class RewardBatches:
    """Windows of ``horizon`` steps for :func:`reward_loss`, drawn with the caller's generator:
    ``{"inputs": {name: (B, K+1, ...)}, "actions": (B, K, A), "rewards", "terminated": (B, K)}``.
    """

    def __init__(
        self,
        store: EpisodeStore,
        model: WorldModel,
        horizon: int,
        batch_size: int,
        device: torch.device | str = "cpu",
    ) -> None:
        check_reward_dataset(store)
        self.input_keys, self.stack = dict(model.input_keys), model.frames
        self.model, self.batch_size, self.device = model, batch_size, torch.device(device)
        keys = [*self.input_keys.values(), "action", *REWARD_KEYS]
        self.sampler = WindowSampler(store, keys, steps=horizon + self.stack - 1, cache=True)

    def sample(self, gen: torch.Generator) -> dict[str, Any]:
        s = self.stack
        batch = self.sampler.sample(self.batch_size, gen)
        out = {
            "inputs": self.model.window_inputs(batch),
            "actions": batch["action"][:, s - 1 :],
            "rewards": batch["reward"][:, s - 1 :].float(),
            "terminated": batch["terminated"][:, s - 1 :],
        }
        return to_device(out, self.device)
