"""Training the goal-conditioned critic: hindsight goals, the TD loss with a target network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from wmrobot.errors import ConfigError, DatasetError, check_range
from wmrobot.model.heads import Critic
from wmrobot.model.world_model import WorldModel


@dataclass
class CriticConfig:
    """The critic's recipe; the defaults are tuned on the PointMaze U-maze."""

    lr: float = 1e-3
    batch_size: int = 512
    gamma: float = 0.99  # discount per environment step
    expectile: float = 0.1  # < 0.5: an optimistic (lower) estimate of the cost over the data
    target_tau: float = 0.05  # Polyak step of the target network per update
    future: float = 0.7  # goal probabilities: a later row of the same episode,
    random: float = 0.1  # any row of the dataset,
    next: float = 0.2  # the next row
    finetune: int = 0  # critic-only updates on the final, frozen encoder after the joint run
    joint: bool = True  # also TD updates during the JEPA run (false: fine-tuning only)

    def __post_init__(self) -> None:
        key = "model.train.critic."
        check_range(key + "lr", self.lr, 0, closed=False)
        check_range(key + "batch_size", self.batch_size, 1)
        check_range(key + "finetune", self.finetune, 0)
        if not self.joint and self.finetune < 1:
            raise ConfigError(
                f"{key}joint=false with {key}finetune={self.finetune} never trains the critic; "
                f"set {key}finetune > 0 or model.critic=false"
            )
        check_range(key + "gamma", self.gamma, 0, 1, closed=False)
        check_range(key + "expectile", self.expectile, 0, 1, closed=False)
        if not 0 < self.target_tau <= 1:  # at 0 the target would never move
            raise ConfigError(
                f"{key}target_tau={self.target_tau} is out of range: it must be in (0, 1]"
            )
        for name in ("future", "random", "next"):
            check_range(key + name, getattr(self, name), 0, 1)
        total = self.future + self.random + self.next
        if abs(total - 1) > 1e-6:
            raise ConfigError(
                f"{key}future + random + next = {total:g}: the goal probabilities must sum to 1"
            )


@dataclass
class GoalBatch:
    """Rows of a store for one critic update: ``rows`` (B,) states with a successor in their
    episode, ``next_rows`` = rows + 1, ``goal_rows`` (B,) hindsight goals and ``steps`` (B,):
    how many steps the episode took from the row to the goal (-1 when the goal lies in
    another episode or before the row)."""

    rows: torch.Tensor
    next_rows: torch.Tensor
    goal_rows: torch.Tensor
    steps: torch.Tensor


class HindsightGoals:
    """Draws (state, next state, goal) rows from an episode store's layout.

    ``episode_ends`` (E,) are the exclusive end rows of the episodes (``meta/episode_ends``).
    Future goals are later rows of the same episode (uniform over what is left), never past
    its end; random goals are any row; next goals are the next row.
    """

    def __init__(self, episode_ends: np.ndarray, cfg: CriticConfig) -> None:
        ends = np.asarray(episode_ends, dtype=np.int64)
        if ends.ndim != 1 or len(ends) == 0 or (np.diff(np.concatenate([[0], ends])) < 1).any():
            raise DatasetError(
                f"episode_ends {ends[:5].tolist()}... must be increasing exclusive end rows; "
                f"pass the store's meta/episode_ends"
            )
        self.cfg = cfg
        self.n_rows = int(ends[-1])
        lengths = np.diff(np.concatenate([[0], ends]))
        episode = np.repeat(np.arange(len(ends)), lengths)
        has_next = np.ones(self.n_rows, dtype=bool)
        has_next[ends - 1] = False
        if not has_next.any():
            raise DatasetError("every episode has a single row; the critic needs transitions")
        self.episode = torch.as_tensor(episode)
        self.episode_end = torch.as_tensor(np.repeat(ends, lengths))
        self.valid = torch.as_tensor(np.flatnonzero(has_next))

    def sample(self, n: int, generator: torch.Generator) -> GoalBatch:
        cfg = self.cfg
        rows = self.valid[torch.randint(len(self.valid), (n,), generator=generator)]
        left = self.episode_end[rows] - rows - 1  # rows after this one in its episode (>= 1)
        future = rows + 1 + (torch.rand(n, generator=generator) * left).long().clamp_max(left - 1)
        anywhere = torch.randint(self.n_rows, (n,), generator=generator)
        u = torch.rand(n, generator=generator)
        goals = torch.where(
            u < cfg.future, future, torch.where(u < cfg.future + cfg.random, anywhere, rows + 1)
        )
        ahead = (self.episode[goals] == self.episode[rows]) & (goals > rows)
        steps = torch.where(ahead, goals - rows, torch.full_like(rows, -1))
        return GoalBatch(rows, rows + 1, goals, steps)


def critic_loss(
    critic: Critic,
    target: Critic,
    z: torch.Tensor,
    z_next: torch.Tensor,
    goal_z: torch.Tensor,
    reached: torch.Tensor,
    steps: torch.Tensor,
    cfg: CriticConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Expectile TD loss of ``critic`` on one batch; ``target`` gives the bootstrap values.

    z, z_next, goal_z (B, D) latents (detach them from the world model), ``reached`` (B,) bool:
    the next state is at the goal (e.g. achieved goals within the task's success radius),
    ``steps`` (B,) from :class:`GoalBatch`. Each step before the goal costs 1:
    y = 1 + gamma * (1 - reached) * V_target(z', g). When the episode itself reached the goal
    in k steps, y is capped by (1 - gamma^k) / (1 - gamma): the data proves the goal that
    close, which stops bootstrapped over-estimates from spreading. The loss is the expectile
    regression |expectile - 1(y < V)| (y - V)^2, so V leans to the cheapest outcome seen.
    """
    with torch.no_grad():
        y = 1.0 + cfg.gamma * (~reached).float() * target(z_next, goal_z)
        k = steps.clamp_min(0).float()
        bound = (1.0 - cfg.gamma**k) / (1.0 - cfg.gamma)
        y = torch.where(steps > 0, torch.minimum(y, bound), y)
    v = critic(z, goal_z)
    diff = y - v
    weight = torch.where(diff < 0, 1.0 - cfg.expectile, cfg.expectile)
    loss = (weight * diff.pow(2)).mean()
    return loss, {"critic": loss.item(), "value": v.mean().item(), "target": y.mean().item()}


def td_loss(
    model: WorldModel, batch: dict[str, Any], cfg: CriticConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`critic_loss` of ``model.critic`` on a batch of transitions
    (:meth:`~wmrobot.train.data.Batches.transitions`), on the target encoder's latents, or
    on latents already encoded (``z``, ``z_next``, ``goal_z``: :class:`LatentTransitions`)."""
    if "z" in batch:
        z, z_next, goal_z = batch["z"], batch["z_next"], batch["goal_z"]
    else:
        states = [batch["now"], batch["next"], batch["goal"]]
        inputs = {name: torch.cat([s[name] for s in states]) for name in batch["now"]}
        with torch.no_grad():
            z, z_next, goal_z = model.encode_target(inputs).float().split(len(batch["steps"]))
    return critic_loss(
        model.critic, model.critic_target, z, z_next, goal_z, batch["reached"], batch["steps"],
        cfg,
    )  # fmt: skip


def make_critic(
    latent_dim: int, hidden: int = 128, depth: int = 2, embed: int = 32
) -> tuple[Critic, Critic]:
    """A critic and its target network (a frozen copy, moved only by :func:`update_target`);
    a world model sizes its own from ``model.critic_hidden/critic_depth/critic_embed``."""
    critic = Critic(latent_dim, hidden, depth, embed)
    target = Critic(latent_dim, hidden, depth, embed).requires_grad_(False)
    target.load_state_dict(critic.state_dict())
    return critic, target


@torch.no_grad()
def update_target(critic: Critic, target: Critic, tau: float) -> None:
    """Polyak step: target <- (1 - tau) target + tau critic."""
    for p_t, p in zip(target.parameters(), critic.parameters(), strict=True):
        p_t.lerp_(p, tau)
