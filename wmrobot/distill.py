"""Mode-1: distil the Mode-2 planner into the world model's actor head (imitation, then DAgger).

The actor maps (latent, goal latent) to an action in one forward pass. It first imitates the
planner's first action on dataset states aiming at hindsight goals (the planner starts cold
there, so it gets ``label_iterations`` iterations), then improves on its own rollouts: each
DAgger round runs the actor in the env from random starts to random goals (``env.reset``
seeds of their own, never the evaluation set), a receding-horizon planner, warm-started along
the way, labels every state the actor visits, and the actor trains on all labels so far.
The encoder, predictor and heads stay frozen; only the actor learns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np
import torch

from wmrobot.agent import Observer
from wmrobot.envs import make_env
from wmrobot.errors import ConfigError
from wmrobot.eval.rollout import evaluate
from wmrobot.model.heads import Actor
from wmrobot.model.world_model import WorldModel
from wmrobot.planners import PlannerConfig, RecedingHorizon, as_config, make_planner

# env.reset seeds of DAgger episodes start here: far from the evaluation sets' seeds.
DAGGER_SEED_BASE = 1_000_000


@dataclass
class DistillConfig:
    """How the actor is distilled (``configs/distill.yaml``'s ``actor`` section).

    ``states`` dataset rows labelled by the planner for imitation, each aiming at the goal of
    a later row of its episode (share ``future``) or of any row; ``rounds`` DAgger rounds of
    ``episodes`` actor episodes each (``budget`` steps at most; null: the env's episode
    limit); ``steps`` Adam updates (``lr``, ``batch_size``) after the imitation labels and
    after each round's; the actor is ``depth`` layers of ``hidden`` units.
    """

    states: int = 4096
    rounds: int = 8
    episodes: int = 32
    budget: Optional[int] = None  # noqa: UP045 (OmegaConf reads typing.Optional)
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    hidden: int = 256
    depth: int = 2
    future: float = 0.5
    label_iterations: Optional[int] = None  # noqa: UP045 (null: twice planner.iterations)

    def __post_init__(self) -> None:
        self.check()  # so the CLI's typed config is checked when it is built

    def check(self) -> None:
        for key in ("states", "episodes", "steps", "batch_size", "hidden"):
            if getattr(self, key) < 1:
                raise ConfigError(f"actor.{key}={getattr(self, key)}: it must be >= 1")
        for key in ("rounds", "depth"):
            if getattr(self, key) < 0:
                raise ConfigError(f"actor.{key}={getattr(self, key)}: it must be >= 0")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"actor.budget={self.budget}: it must be >= 1 (or null)")
        if self.label_iterations is not None and self.label_iterations < 1:
            raise ConfigError(f"actor.label_iterations={self.label_iterations}: it must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"actor.lr={self.lr}: it must be > 0")
        if not 0 <= self.future <= 1:
            raise ConfigError(f"actor.future={self.future}: it must be in [0, 1]")


def attach_actor(model: WorldModel, hidden: int, depth: int) -> Actor:
    """Give ``model`` a fresh actor head (its config then records it, so checkpoints load)."""
    model.cfg.actor, model.cfg.actor_hidden, model.cfg.actor_depth = True, hidden, depth
    model.actor = Actor(model.cfg.latent_dim, model.action_dim, hidden, depth)
    return model.actor


def to_unit(model: WorldModel, action: torch.Tensor) -> torch.Tensor:
    """Actions in the bounds -> [-1, 1] (the actor's tanh range)."""
    mid, half = model.action_scale()
    return ((action - mid) / half).clamp(-1, 1)


def hindsight_rows(
    episode_ends: np.ndarray, n: int, future: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (row, goal row) pairs: the goal a later row of the row's episode (share
    ``future``) or any row; rows that end an episode are never drawn."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    lengths = ends - starts
    episode_end = np.repeat(ends, lengths)
    valid = np.flatnonzero(np.arange(ends[-1]) < episode_end - 1)
    rows = rng.choice(valid, size=n)
    later = rows + 1 + (rng.random(n) * (episode_end[rows] - rows - 1)).astype(np.int64)
    anywhere = rng.integers(0, ends[-1], size=n)
    goals = np.where(rng.random(n) < future, later, anywhere)
    return rows, goals


@torch.no_grad()
def label_states(
    model: WorldModel, planner_cfg: PlannerConfig, z: torch.Tensor, goal_z: torch.Tensor, seed: int
) -> torch.Tensor:
    """The planner's first action from each latent, planning from a cold start: (N, A)."""
    planner, out = make_planner(model, planner_cfg, seed), []
    for zc, gc in zip(z.split(256), goal_z.split(256), strict=True):
        planner.reset()
        out.append(planner.plan(zc, gc)[:, 0])
    return torch.cat(out)


class LabelBuffer:
    """(latent, goal latent, unit action) triples, grown round by round."""

    def __init__(self) -> None:
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(self, z: torch.Tensor, goal_z: torch.Tensor, unit: torch.Tensor) -> None:
        self.parts.append((z, goal_z, unit))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z, g, a = zip(*self.parts, strict=True)
        return torch.cat(z), torch.cat(g), torch.cat(a)

    def __len__(self) -> int:
        return sum(len(p[0]) for p in self.parts)


def fit_actor(
    actor: Actor,
    optimiser: torch.optim.Optimizer,
    data: LabelBuffer,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """``steps`` Adam updates of the mean squared error to the labels; the last 10% mean."""
    z, g, a = data.tensors()
    actor.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(z), (min(batch_size, len(z)),), generator=generator)
        loss = (actor(z[idx], g[idx]) - a[idx]).pow(2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    actor.eval()
    return float(np.mean(losses[-max(1, steps // 10) :]))


class _Dagger:
    """A policy for :func:`~wmrobot.eval.rollout.evaluate`: acts with the actor while a
    receding-horizon planner, warm-started along the way, labels every state it is shown."""

    def __init__(self, model: WorldModel, planner_cfg: PlannerConfig, goal_observation, seed):
        self.model = model
        self.observer = Observer(model, goal_observation)
        self.controller = RecedingHorizon(make_planner(model, planner_cfg, seed), 1)
        self.labels = LabelBuffer()

    def reset(self) -> None:
        self.observer.reset()
        self.controller.reset()

    def keep(self, indices: np.ndarray) -> None:
        self.observer.keep(indices)
        self.controller.keep(torch.as_tensor(indices, dtype=torch.long))

    @torch.no_grad()
    def predict(self, obs: dict[str, np.ndarray], deterministic: bool = True):
        z, goal_z = self.observer(obs)
        self.labels.add(z, goal_z, to_unit(self.model, self.controller.act(z, goal_z)))
        return self.model.act(z, goal_z).numpy(), None


def dagger_round(
    model: WorldModel,
    planner_cfg: PlannerConfig,
    env_id: str,
    env_kwargs: dict[str, Any],
    goal_observation: Callable[[np.ndarray], np.ndarray],
    episodes: int,
    budget: int,
    reset_seed: int,
    plan_seed: int,
) -> tuple[LabelBuffer, float, int]:
    """Run the actor in ``episodes`` envs at once (random starts and goals from the reset
    seeds ``reset_seed`` on); a receding-horizon planner labels each visited state. ->
    labels, the actor's success rate, env steps taken."""
    policy = _Dagger(model, planner_cfg, goal_observation, plan_seed)
    seeds = list(range(reset_seed, reset_seed + episodes))
    records = evaluate(policy, env_id, env_kwargs, [{}] * episodes, budget, seeds)
    success = float(np.mean([r.success for r in records]))
    return policy.labels, success, sum(r.steps for r in records)


def task_facts(env_id: str, env_kwargs: dict[str, Any]) -> tuple[Callable, int | None]:
    """The env's ``goal_observation`` (the planner's goal states) and its episode limit."""
    probe = make_env(env_id, env_kwargs)
    goal_observation = getattr(probe.unwrapped, "goal_observation", None)
    limit = probe.spec.max_episode_steps if probe.spec is not None else None
    probe.close()
    if goal_observation is None:
        raise ConfigError(f"{env_id} has no goal_observation(desired_goal): it has no goals")
    return goal_observation, limit


def _read_rows(store: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observations and achieved goals of dataset ``rows`` (in their order), read without
    loading the columns (Zarr's orthogonal reads take sorted indices)."""
    order = np.argsort(rows)
    out = []
    for key in ("obs/observation", "obs/achieved_goal"):
        values = np.empty((len(rows), *store.array(key).shape[1:]), np.float32)
        values[order] = store.read(f"data/{key}", rows[order])  # an orthogonal read
        out.append(values)
    return out[0], out[1]


def distill(
    model: WorldModel,
    planner_cfg: PlannerConfig,
    store: Any,
    env_id: str,
    env_kwargs: dict[str, Any],
    cfg: DistillConfig,
    seed: int,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train ``model``'s actor head (attached fresh) to act like ``planner_cfg``'s planner.

    ``store`` is the dataset whose states are imitated; the DAgger rounds run in ``env_id``
    (``env_kwargs``), ``cfg.budget`` steps at most (null: the env's episode limit, else 100).
    Returns one record per stage: labels so far, training loss, the actor's success on that
    round's own episodes (DAgger rounds) and the env steps they took.
    """
    cfg.check()
    if tuple(model.input_keys) != ("state",):
        raise ConfigError(
            f"distill imitates on dataset states and runs state models only for now; this "
            f"model reads {sorted(model.input_keys)} (model.encoder={model.cfg.encoder})"
        )
    planner_cfg = as_config(planner_cfg)
    goal_observation, limit = task_facts(env_id, env_kwargs)
    budget = cfg.budget or limit or 100
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval().requires_grad_(False)
    actor = attach_actor(model, cfg.hidden, cfg.depth)
    optimiser = torch.optim.Adam(actor.parameters(), lr=cfg.lr)
    history: list[dict[str, Any]] = []

    start = time.perf_counter()
    rows, goal_rows = hindsight_rows(store.episode_ends, cfg.states, cfg.future, rng)
    obs, achieved = _read_rows(store, np.concatenate([rows, goal_rows]))
    with torch.no_grad():
        z = model.encode(torch.as_tensor(obs[: cfg.states]))
        goal_state = goal_observation(achieved[cfg.states :])
        goal_z = model.encode(torch.as_tensor(goal_state, dtype=torch.float32))
    iterations = cfg.label_iterations or 2 * planner_cfg.iterations
    label_cfg = replace(planner_cfg, iterations=iterations)
    actions = label_states(model, label_cfg, z, goal_z, seed)
    data = LabelBuffer()
    data.add(z, goal_z, to_unit(model, actions))
    loss = fit_actor(actor, optimiser, data, cfg.steps, cfg.batch_size, generator)
    history.append(
        {"stage": "imitation", "labels": len(data), "loss": loss, "success": None, "env_steps": 0}
    )
    say(
        f"distill: imitation on {len(data):,} dataset states, loss {loss:.4f} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    for r in range(cfg.rounds):
        labels, rate, steps = dagger_round(
            model,
            planner_cfg,
            env_id,
            env_kwargs,
            goal_observation,
            cfg.episodes,
            budget,
            DAGGER_SEED_BASE + seed * 10_000 + r * cfg.episodes,
            seed + 1 + r,
        )
        data.parts.extend(labels.parts)
        loss = fit_actor(actor, optimiser, data, cfg.steps, cfg.batch_size, generator)
        history.append(
            {
                "stage": f"dagger {r + 1}",
                "labels": len(data),
                "loss": loss,
                "success": rate,
                "env_steps": steps,
            }
        )
        say(
            f"distill: DAgger round {r + 1}/{cfg.rounds}: actor success {100 * rate:.0f}% on "
            f"{cfg.episodes} own episodes of <= {budget} steps, {len(data):,} labels, "
            f"loss {loss:.4f} "
            f"({time.perf_counter() - start:.0f} s)"
        )
    for name, p in model.named_parameters():
        p.requires_grad_(trainable.get(name, True))  # as before; the actor's are trainable
    return history
