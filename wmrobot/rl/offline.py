"""Offline baselines on the same dataset a world model sees, no env steps beyond it and no world
model: goal-conditioned behaviour cloning (GCBC) and goal-conditioned implicit Q-learning
(GCIQL), both with hindsight relabelling (stable-worldmodel's offline rows).

Every row of a goal task's dataset with an action is paired with a goal the same episode
achieved later (``future``, uniformly among its later rows) or any row's achieved goal. GCBC
regresses the row's action from (observation, goal). GCIQL (Kostrikov et al. 2022, in the
goal-conditioned form of OGBench) learns Q(s, a, g) and V(s, g) from the reward -1 per step until
the next row's achieved goal reaches g (the env's own ``is_success``), V by expectile regression
on the Q targets, then extracts the policy by advantage-weighted regression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from wmrobot.errors import ConfigError, DatasetError, check_range
from wmrobot.model.layers import mlp

KEYS = ("obs/observation", "obs/achieved_goal", "action")


@dataclass
class GCBCConfig:
    """``steps`` Adam updates of ``batch_size`` at ``lr`` on an MLP of ``hidden`` widths;
    a goal is a later row's achieved goal of the same episode with probability ``future``,
    else any row's."""

    steps: int = 20_000
    batch_size: int = 256
    lr: float = 1e-3
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    future: float = 0.8

    def __post_init__(self) -> None:
        check_range("gcbc.steps", self.steps, 1)
        check_range("gcbc.batch_size", self.batch_size, 1)
        check_range("gcbc.lr", self.lr, 0, closed=False)
        check_range("gcbc.future", self.future, 0, 1)
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"gcbc.hidden={list(self.hidden)}: widths >= 1, e.g. [256, 256]")


class GCBCPolicy(nn.Module):
    """a = mid + half * tanh(MLP([(obs - mean) / std, (goal - gmean) / gstd]))."""

    def __init__(self, obs_dim: int, goal_dim: int, action_dim: int, hidden: list[int]):
        super().__init__()
        self.net = mlp(obs_dim + goal_dim, hidden[0], action_dim, len(hidden))
        for name, size in (("obs", obs_dim), ("goal", goal_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(size))
            self.register_buffer(f"{name}_std", torch.ones(size))
        self.register_buffer("action_mid", torch.zeros(action_dim))
        self.register_buffer("action_half", torch.ones(action_dim))

    def inputs(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """(observation, goal), each normalised by the dataset's statistics, side by side."""
        return torch.cat([(obs - self.obs_mean) / self.obs_std,
                          (goal - self.goal_mean) / self.goal_std], dim=-1)  # fmt: skip

    def forward(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.action_mid + self.action_half * torch.tanh(self.net(self.inputs(obs, goal)))


@dataclass
class GoalData:
    """A goal task's dataset as the offline methods read it: ``rows`` with an action, the end
    (one past the last row) of each one's episode, every row's observation and achieved goal
    (also as float64 for the env's success test), and the rows' actions."""

    rows: np.ndarray
    episode_end: np.ndarray
    obs: torch.Tensor
    achieved: torch.Tensor
    achieved64: np.ndarray
    actions: torch.Tensor

    @classmethod
    def load(cls, store: Any, method: str) -> GoalData:
        missing = [k for k in KEYS if k not in store.keys]
        if missing:
            raise DatasetError(f"{method} needs a goal task's dataset; it has no {missing[0]!r}")
        data = store.load(list(KEYS))
        ends = np.asarray(store.episode_ends)
        starts = np.concatenate([[0], ends[:-1]])
        rows = np.setdiff1d(np.arange(int(ends[-1])), ends - 1)
        achieved64 = np.asarray(data["obs/achieved_goal"], dtype=np.float64)
        return cls(rows, np.repeat(ends, ends - starts)[rows],
                   torch.as_tensor(data["obs/observation"], dtype=torch.float32),
                   torch.as_tensor(achieved64, dtype=torch.float32), achieved64,
                   torch.as_tensor(data["action"][rows], dtype=torch.float32))  # fmt: skip

    def policy(self, hidden: list[int], seed: int) -> GCBCPolicy:
        """A fresh policy (seeded) normalised by this data, its actions inside the data's."""
        torch.manual_seed(seed)
        obs, achieved, actions = self.obs, self.achieved, self.actions
        policy = GCBCPolicy(obs.shape[1], achieved.shape[1], actions.shape[1], list(hidden))
        low, high = actions.min(0).values, actions.max(0).values
        policy.obs_mean.copy_(obs.mean(0))
        policy.obs_std.copy_(obs.std(0).clamp_min(1e-6))
        policy.goal_mean.copy_(achieved.mean(0))
        policy.goal_std.copy_(achieved.std(0).clamp_min(1e-6))
        policy.action_mid.copy_((high + low) / 2)
        policy.action_half.copy_(((high - low) / 2).clamp_min(1e-6))
        return policy

    def batch(self, size: int, future: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """``size`` random rows with an action (indices into ``actions`` and into the rows) and
        each one's hindsight goal row."""
        pick = rng.integers(0, len(self.rows), size)
        r = self.rows[pick]
        return pick, r, hindsight_rows(r, self.episode_end[pick], len(self.obs), future, rng)


def train_gcbc(store: Any, cfg: GCBCConfig, seed: int) -> tuple[GCBCPolicy, list[float]]:
    """GCBC on ``store`` (a goal task's dataset); the policy and its loss every 100 steps."""
    data = GoalData.load(store, "GCBC")
    obs, achieved, actions = data.obs, data.achieved, data.actions
    policy = data.policy(cfg.hidden, seed)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(seed)
    losses = []
    for step in range(cfg.steps):
        pick, r, goal_rows = data.batch(cfg.batch_size, cfg.future, rng)
        loss = (policy(obs[r], achieved[goal_rows]) - actions[pick]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            losses.append(round(loss.item(), 5))
    return policy.eval(), losses


def hindsight_rows(
    rows: np.ndarray, episode_end: np.ndarray, n_rows: int, future: float, rng: np.random.Generator
) -> np.ndarray:
    """For each row, the row whose achieved goal is its goal: with probability ``future`` one of
    the same episode's later rows, uniformly (``episode_end``: one past the episode's last
    row), else any of the ``n_rows``."""
    later = rows + 1 + (rng.random(len(rows)) * (episode_end - rows - 1)).astype(np.int64)
    anywhere = rng.integers(0, n_rows, len(rows))
    return np.where(rng.random(len(rows)) < future, later, anywhere)


class GCBCAgent:
    """A GCBC policy acting in a goal env: (observation, desired goal) -> action."""

    def __init__(self, policy: GCBCPolicy) -> None:
        self.policy = policy

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def predict(
        self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        o = torch.as_tensor(np.asarray(obs["observation"]), dtype=torch.float32)
        g = torch.as_tensor(np.asarray(obs["desired_goal"]), dtype=torch.float32)
        single = o.ndim == 1
        action = self.policy(o.reshape(-1, o.shape[-1]), g.reshape(-1, g.shape[-1])).numpy()
        return (action[0] if single else action), None


@dataclass
class GCIQLConfig:
    """GCIQL's updates (``steps`` of ``batch_size`` at ``lr``), discount ``gamma``, V's
    ``expectile``, the AWR temperature ``beta``, target Polyak step ``tau``, network ``hidden``
    widths and the share of ``future`` goals (the rest: any row's)."""

    steps: int = 20_000
    batch_size: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    expectile: float = 0.9
    beta: float = 3.0
    tau: float = 0.005
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    future: float = 0.8

    def __post_init__(self) -> None:
        check_range("gciql.steps", self.steps, 1)
        check_range("gciql.batch_size", self.batch_size, 1)
        check_range("gciql.lr", self.lr, 0, closed=False)
        check_range("gciql.gamma", self.gamma, 0, 1)
        check_range("gciql.expectile", self.expectile, 0, 1, closed=False)
        check_range("gciql.beta", self.beta, 0)
        check_range("gciql.tau", self.tau, 0, 1)
        check_range("gciql.future", self.future, 0, 1)
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"gciql.hidden={list(self.hidden)}: widths >= 1, e.g. [256, 256]")


def train_gciql(
    store: Any, is_success: Any, cfg: GCIQLConfig, seed: int
) -> tuple[GCBCPolicy, list[dict[str, float]]]:
    """GCIQL on ``store``; ``is_success(achieved (N, G), goal (N, G)) -> (N,) bool`` is the
    task's own test (``env.unwrapped.is_success``). The policy (acting as GCBC's does) and the
    losses every 100 steps."""
    import copy

    data = GoalData.load(store, "GCIQL")
    obs, achieved, actions = data.obs, data.achieved, data.actions
    policy = data.policy(cfg.hidden, seed)
    o_dim, g_dim, a_dim, h = obs.shape[1], achieved.shape[1], actions.shape[1], cfg.hidden
    norm = policy.inputs
    q = nn.ModuleList(mlp(o_dim + g_dim + a_dim, h[0], 1, len(h)) for _ in range(2))
    q_target = copy.deepcopy(q).requires_grad_(False)
    v = mlp(o_dim + g_dim, h[0], 1, len(h))
    opt_q = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    opt_v = torch.optim.Adam(v.parameters(), lr=cfg.lr)
    opt_pi = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(seed)
    log = []
    for step in range(cfg.steps):
        pick, r, g_rows = data.batch(cfg.batch_size, cfg.future, rng)
        reached = torch.as_tensor(is_success(data.achieved64[r + 1], data.achieved64[g_rows]))
        reward, done = reached.float() - 1.0, reached.float()  # -1 per step until reached
        s, s2, g, a = obs[r], obs[r + 1], achieved[g_rows], actions[pick]
        a_unit = (a - policy.action_mid) / policy.action_half
        x, x2 = norm(s, g), norm(s2, g)
        with torch.no_grad():
            q_t = torch.min(*(m(torch.cat([x, a_unit], -1))[:, 0] for m in q_target))
            target = reward + cfg.gamma * (1 - done) * v(x2)[:, 0]
        diff = q_t - v(x)[:, 0]
        weight = torch.where(diff > 0, cfg.expectile, 1 - cfg.expectile)
        v_loss = (weight * diff.pow(2)).mean()
        opt_v.zero_grad(set_to_none=True)
        v_loss.backward()
        opt_v.step()
        q_loss = sum((m(torch.cat([x, a_unit], -1))[:, 0] - target).pow(2).mean() for m in q)
        opt_q.zero_grad(set_to_none=True)
        q_loss.backward()
        opt_q.step()
        with torch.no_grad():
            for p, pt in zip(q.parameters(), q_target.parameters(), strict=True):
                pt.lerp_(p, cfg.tau)
            adv = q_t - v(x)[:, 0]
            w = torch.exp(cfg.beta * adv).clamp(max=100.0)
        pi_loss = (w * (policy(s, g) - a).pow(2).sum(-1)).mean()
        opt_pi.zero_grad(set_to_none=True)
        pi_loss.backward()
        opt_pi.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            log.append({"step": step, "q": round(q_loss.item(), 5),
                        "v": round(v_loss.item(), 5), "pi": round(pi_loss.item(), 5)})  # fmt: skip
    return policy.eval(), log
