"""``wmrobot learn``: the online model-based loop. Seed the dataset with random actions, then
act with the planner (plus exploration noise), keep every episode in the same Zarr dataset,
update the world model as the data grows, and evaluate on fixed seeds along the way. A reward
task (any gym env with a reward; ``model=reward_mlp``) scores the return; a goal task
(``model=state_mlp`` or another goal model) plans to each episode's goal and scores success.

Everything a run needs to continue is in ``out/``: the dataset (``dataset.zarr``), the
resumable state (``learn_state.pt``, written at episode ends), the learning curve
(``curve.csv``, ``curve.png``), the training log (``metrics.csv``) and the model
(``checkpoint/``). A run killed at any moment and resumed (``resume=True``) rolls the dataset
back to the episodes of its last state and redoes the rest: it ends with the same episodes and
the same curve as a run that never stopped (same seed, CPU, same thread count).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from wmrobot.agent import PlanningAgent
from wmrobot.datasets import EpisodeStore
from wmrobot.datasets.collector import collect
from wmrobot.datasets.episodes import episode_seed, run_episode
from wmrobot.datasets.repair import roll_back
from wmrobot.envs import episode_length, make_env
from wmrobot.errors import CheckpointError, ConfigError, DatasetError, check_range
from wmrobot.eval.rollout import evaluate
from wmrobot.files import write_atomically
from wmrobot.model.checkpoint import load_tensors
from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.planners import PlannerConfig, as_config
from wmrobot.provenance import versions
from wmrobot.rl.dream import DreamAgent
from wmrobot.rl.mbpo import BranchConfig, Branched
from wmrobot.train.checkpoint import save_checkpoint
from wmrobot.train.data import Batches, build_model
from wmrobot.train.metrics import MetricsLog
from wmrobot.train.reward import RewardBatches
from wmrobot.train.trainer import (
    GoalUpdate,
    Objective,
    RewardUpdate,
    TrainConfig,
    batch_generator,
    follow_targets,
    optimizers,
    rounded,
)

DATASET, STATE, CURVE, CHECKPOINT = "dataset.zarr", "learn_state.pt", "curve.csv", "checkpoint"
AGENT = "agent.zip"  # learn.actor=sac: the SB3 agent on the model's latents
RUN = "learn.json"  # the run's identity, written first: what resume=true continues
OVERRIDES = "overrides.json"  # the command line's overrides, for `resume=true` alone
ACTORS = ("planner", "sac")
CURVE_COLUMNS = ("env_steps", "return_mean", "return_std", "success_mean", "updates", "wall_s")


@dataclass
class LearnConfig:
    """The online loop's schedule (``learn.*``).

    ``steps``: the env-step budget, the random seed data included. ``seed_steps``: random
    actions first (whole episodes, so a little more), then ``pretrain`` updates (default: one
    per seed step). Then every ``update_every`` env steps, ``updates`` gradient steps on the
    episodes finished so far (TD-MPC2 adds an episode to its buffer when it ends, too).
    ``noise``: the std of the Gaussian added to each planned action, as a fraction of the
    action range's half-width. Every ``eval_every`` env steps (and at the end), the planner
    acts without noise in ``eval_episodes`` episodes reset with seeds ``eval_seed`` + i.
    ``checkpoint_every``: env steps between resumable states (written at the next episode
    end). ``actor``: who acts, the ``planner`` or ``sac``, an SB3 SAC agent on the model's
    latents trained on real and branched model rollouts (MBPO; reward tasks;
    :mod:`wmrobot.rl.mbpo`, settings ``dream.*``), whose deterministic policy is evaluated.
    """

    steps: int
    seed_steps: int = 1000
    pretrain: int | None = None
    update_every: int = 1
    updates: int = 1
    noise: float = 0.1
    eval_every: int = 1000
    eval_episodes: int = 10
    eval_seed: int = 10_000
    checkpoint_every: int = 1000
    actor: str = "planner"

    def __post_init__(self) -> None:
        if self.actor not in ACTORS:
            raise ConfigError(f"learn.actor={self.actor!r} is unknown; choose from {ACTORS}")
        for key in ("steps", "seed_steps", "update_every", "eval_every", "eval_episodes"):
            check_range(f"learn.{key}", getattr(self, key), 1)
        for key in ("updates", "eval_seed", "checkpoint_every", "pretrain", "noise"):
            check_range(f"learn.{key}", getattr(self, key), 0)
        if self.seed_steps >= self.steps:
            raise ConfigError(
                f"learn.seed_steps={self.seed_steps} leaves no step of learn.steps={self.steps} "
                f"to the planner; lower seed_steps or raise steps"
            )


@dataclass
class Progress:
    """Where a run stands: counted env steps (seed data included), episodes in the dataset,
    gradient steps, the next evaluation, seconds spent, the curve so far."""

    env_steps: int = 0
    episodes: int = 0
    updates: int = 0
    next_eval: int = 0
    seconds: float = 0.0
    eval_seconds: float = 0.0
    curve: list[dict[str, float]] = dataclasses.field(default_factory=list)


class Learner:
    """The loop's state and its steps; :func:`learn` drives it."""

    def __init__(
        self,
        out: Path,
        env_id: str,
        env_kwargs: dict[str, Any],
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        planner: PlannerConfig,
        cfg: LearnConfig,
        seed: int,
        progress: bool = True,
        overrides: list[str] | None = None,
        branch: BranchConfig | None = None,
    ) -> None:
        self.branch_cfg = (branch or BranchConfig()) if cfg.actor == "sac" else None
        self.branched: Branched | None = None
        self.out, self.env_id, self.env_kwargs = out, env_id, dict(env_kwargs)
        self.model_cfg, self.train_cfg, self.cfg, self.seed = model_cfg, train_cfg, cfg, seed
        self.planner_cfg = as_config(planner)
        self.show = progress
        self.overrides = overrides  # the command line's, kept for `resume=true` alone
        self.p = Progress()
        self.identity = json.dumps(
            {
                "env": [env_id, self.env_kwargs],
                "model": dataclasses.asdict(model_cfg),
                "train": dataclasses.asdict(train_cfg),
                "planner": dataclasses.asdict(self.planner_cfg),
                "learn": dataclasses.asdict(cfg),
                "seed": seed,
                **({"dream": dataclasses.asdict(self.branch_cfg)} if self.branch_cfg else {}),
            },
            sort_keys=True,
            default=str,
        )

    # ------------------------------------------------------------------------------- set-up
    def seed_data(self) -> None:
        """The random seed episodes (the collector's own path: resumable, crash-safe)."""
        path = str(self.out / DATASET)
        collect(path, self.env_id, self.env_kwargs, "random", steps=self.cfg.seed_steps,
                seed=self.seed, progress=self.show, fast=False)  # fmt: skip

    def build(self) -> None:
        """The model, its optimisers and the planning agent, from the seed data."""
        self.store = EpisodeStore.open(str(self.out / DATASET), mode="a")
        torch.manual_seed(self.seed)
        task = "goal" if self.goal_task else "reward"
        self.model = build_model(self.store, dataclasses.replace(self.model_cfg, task=task))
        self.opts = optimizers(self.model, self.train_cfg)
        self.gen = batch_generator(self.seed, 0)
        if self.goal_task:
            cfg = self.train_cfg
            self.update = GoalUpdate(Objective(self.model, cfg), self.opts, cfg.grad_clip)
        else:
            self.update = RewardUpdate(self.model, self.train_cfg, self.opts, self.gen)
        self.rng = np.random.default_rng([self.seed, 1])  # exploration noise
        if self.planner_cfg.backend != "auto":
            self.agent = self.planning_agent()
        else:  # Numba if the model exports, not timed: a resumed run plans alike
            self.planner_cfg = dataclasses.replace(self.planner_cfg, backend="numba")
            try:
                self.agent = self.planning_agent()
            except ConfigError:  # not an exportable MLP model
                self.planner_cfg = dataclasses.replace(self.planner_cfg, backend="torch")
                self.agent = self.planning_agent()
        self.batches: RewardBatches | None = None
        self.log = None
        if self.branch_cfg is not None:
            self.branched = Branched(self.model, self.branch_cfg, self.seed)

    def planning_agent(self) -> PlanningAgent:
        """The planner on the current model (aiming at each episode's goal on a goal task)."""
        return PlanningAgent(self.model, self.planner_cfg, self.goal_observation, seed=self.seed)

    def same_run(self, identity: str | None) -> bool:
        """Whether ``identity`` (a saved run's) is this run's, the budget aside: raising
        ``learn.steps`` continues a run, whose curve up to its old budget stays."""

        def sans_budget(text: str) -> dict[str, Any]:
            run = json.loads(text)
            run["learn"].pop("steps", None)
            return run

        return identity is not None and sans_budget(identity) == sans_budget(self.identity)

    # ------------------------------------------------------------------------- state on disk
    def save(self) -> None:
        """The whole state, atomically: after it, a resumed run redoes nothing before it."""
        planner = self.agent.controller.planner
        state = {
            "identity": self.identity,
            "progress": json.dumps(dataclasses.asdict(self.p)),
            "model": self.model.state_dict(),
            "optimizer": [o.state_dict() for o in self.opts],
            "update": self.update.state_dict(),
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "noise_rng": json.dumps(self.rng.bit_generator.state),
            "planner_rng": json.dumps(planner.rng.bit_generator.state),
        }
        if self.branched is not None:
            state["branched"] = self.branched.state_dict()
        write_atomically(self.out / STATE, lambda f: torch.save(state, f))

    def load(self) -> None:
        path = self.out / STATE
        state = load_tensors(path, f"cannot resume from {str(path)!r}")
        if not self.same_run(state.get("identity")):
            raise CheckpointError(
                f"{str(path)!r} was written for another env, model, planner or learn config "
                f"than this run's; resume with the same config, or learn into a new out="
            )
        self.p = Progress(**json.loads(state["progress"]))
        if self.p.next_eval <= self.p.env_steps:  # a finished run given a larger budget
            self.p.next_eval = self.following_eval()
        self.model.load_state_dict(state["model"])
        for o, saved in zip(self.opts, state["optimizer"], strict=True):
            o.load_state_dict(saved)
        self.update.load_state_dict(state["update"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = json.loads(state["noise_rng"])
        planner = self.agent.controller.planner
        planner.rng.bit_generator.state = json.loads(state["planner_rng"])
        planner.refresh()  # the loaded weights
        if self.branched is not None:
            self.branched.load_state_dict(state["branched"])

    # --------------------------------------------------------------------------------- steps
    def train(self, n: int) -> None:
        """``n`` gradient steps on the episodes committed so far."""
        if n == 0:
            return
        if self.batches is None:  # new episodes since the last sampler
            cfg, model = self.train_cfg, self.model
            if self.goal_task:
                critic = cfg.critic if model.critic is not None else None
                self.batches = Batches(self.store, model, cfg.horizon, cfg.batch_size, critic)
            else:
                self.batches = RewardBatches(self.store, model, cfg.horizon, cfg.batch_size)
        self.model.train()
        for _ in range(n):
            parts, _ = self.update(self.batches.sample(self.gen), _finite)
            follow_targets(self.model, self.model.cfg.ema, self.train_cfg)
            if self.p.updates % self.train_cfg.log_every == 0:
                self.log.write({"step": self.p.updates, **rounded(parts)})
            self.p.updates += 1
        self.model.eval()
        self.agent.controller.planner.refresh()  # a compiled planner re-reads the weights

    def act(self, obs: Any) -> np.ndarray:
        """The planner's action plus exploration noise, inside the bounds; or the SAC agent's
        sampled action on the observation's latent (``learn.actor=sac``)."""
        if self.branched is not None:
            with torch.no_grad():
                z = self.model.encode(torch.as_tensor(np.asarray(obs))[None])
            return self.branched.act(z)[0].astype(np.float32)
        action, _ = self.agent.predict(obs)
        mid, half = (t.numpy() for t in self.model.action_scale())
        noisy = action + self.cfg.noise * half * self.rng.standard_normal(action.shape)
        return np.clip(noisy, mid - half, mid + half).astype(np.float32)

    def after_step(self) -> None:
        """Counted after every env step: updates and evaluations fall due."""
        self.p.env_steps += 1
        self.bar.update(1)
        if self.p.env_steps % self.cfg.update_every == 0:
            self.train(self.cfg.updates)
        if self.branched is not None:
            if self.p.env_steps % self.branch_cfg.refresh_every == 0:
                self.branched.refresh(self.store)
            self.branched.update(self.branch_cfg.updates)
        if self.p.env_steps >= self.p.next_eval:
            self.evaluate()

    def evaluate(self) -> None:
        """The planner without noise on the fixed evaluation episodes; one curve row (its
        ``wall_s``: seconds of the run so far, evaluations excluded)."""
        cfg, start = self.cfg, time.perf_counter()
        agent = self.planning_agent()
        if self.branched is not None:
            agent = DreamAgent(self.model, self.branched.policy)
        seeds = [cfg.eval_seed + i for i in range(cfg.eval_episodes)]
        records = evaluate(agent, self.env_id, self.env_kwargs, [{}] * len(seeds),
                           self.budget, seeds)  # fmt: skip
        returns = np.array([r.ret for r in records])
        row = {
            "env_steps": self.p.env_steps,
            "return_mean": round(float(returns.mean()), 3),
            "return_std": round(float(returns.std()), 3),
            "success_mean": round(float(np.mean([r.success for r in records])), 4),
            "updates": self.p.updates,
            "wall_s": round(self.p.seconds + start - self.started - self.p.eval_seconds, 1),
        }
        self.p.curve.append(row)
        write_curve(self.out, self.p.curve, self.env_id, self.goal_task)
        self.bar.set_postfix(ret=f"{row['return_mean']:.1f}")
        self.p.next_eval = self.following_eval()
        self.p.eval_seconds += time.perf_counter() - start

    def following_eval(self) -> int:
        """The env step of the next evaluation: the next multiple of ``eval_every``, or the
        budget's end."""
        every = self.cfg.eval_every
        return min((self.p.env_steps // every + 1) * every, self.cfg.steps)

    def episode(self) -> None:
        """One planner episode (cut at the budget), committed to the dataset."""
        left = self.cfg.steps - self.p.env_steps
        env = make_env(self.env_id, self.env_kwargs, max_episode_steps=min(self.budget, left))
        self.agent.reset()
        try:
            rows = run_episode(
                _Counted(env, self.after_step),
                _Acting(self.act),
                episode_seed(self.seed, self.store.n_episodes),
            )
        finally:
            env.close()
        self.store.append([rows])
        self.batches = None
        self.p.episodes = self.store.n_episodes

    # ----------------------------------------------------------------------------------- run
    def run(self, resume: bool) -> WorldModel:
        cfg, out = self.cfg, self.out
        probe = make_env(self.env_id, self.env_kwargs)  # a bad env: refused before any write
        self.budget = episode_length(self.env_id, self.env_kwargs) or 1000
        self.goal_task = isinstance(probe.observation_space, gym.spaces.Dict) and (
            "desired_goal" in probe.observation_space.spaces
        )
        self.goal_observation = getattr(probe.unwrapped, "goal_observation", None)
        probe.close()
        if self.goal_task and self.model_cfg.task == "reward":
            raise ConfigError(
                f"env.id={self.env_id} is a goal task and model.task=reward; learn it with a "
                f"goal model: model=state_mlp (or model.task=auto)"
            )
        if self.goal_task and self.branch_cfg is not None:
            raise ConfigError(
                f"learn.actor=sac (branched rollouts, MBPO) learns from rewards and "
                f"{self.env_id} is a goal task; use learn.actor=planner, or `wmrobot dream`"
            )
        if not self.goal_task and self.model_cfg.task == "goal":
            raise ConfigError(
                f"env.id={self.env_id} has no goals and model.task=goal; learn it with a "
                f"reward model: model=reward_mlp (or model.task=auto)"
            )
        out.mkdir(parents=True, exist_ok=True)
        if (out / RUN).exists():
            if not resume:
                raise ConfigError(
                    f"{str(out)!r} holds a learn run; resume it with resume=true or learn into "
                    f"a new out="
                )
            if not self.same_run((out / RUN).read_text()):
                raise CheckpointError(
                    f"{str(out / RUN)!r} is a run of another env, model, planner or learn "
                    f"config; resume with the same config, or learn into a new out="
                )
        else:
            write_atomically(out / RUN, lambda f: f.write(self.identity.encode()))
            if self.overrides is not None:  # what `learn out=DIR resume=true` repeats
                text = json.dumps(self.overrides).encode()
                write_atomically(out / OVERRIDES, lambda f: f.write(text))
        fresh = not (out / STATE).exists()
        self.seed_data()
        self.build()
        try:
            if fresh:
                self.p.episodes = self.store.n_episodes
                self.p.env_steps = self.store.n_transitions
                self.p.next_eval = self.following_eval()
            else:
                self.load()
                roll_back(self.store, self.p.episodes)  # episodes after the state: redone
            self.log = MetricsLog(out, self.p.updates, self.train_cfg.tensorboard)
            self.started = time.perf_counter()
            self.bar = tqdm(total=cfg.steps, initial=self.p.env_steps, desc="learn",
                            unit="step", disable=None if self.show else True)  # fmt: skip
            if fresh:
                self.train(cfg.seed_steps if cfg.pretrain is None else cfg.pretrain)
                if self.branched is not None:
                    self.branched.refresh(self.store)
                self.save()
            saved_at = self.p.env_steps
            while self.p.env_steps < cfg.steps:
                self.episode()
                if self.p.env_steps - saved_at >= cfg.checkpoint_every:
                    self.p.seconds += time.perf_counter() - self.started
                    self.started = time.perf_counter()
                    self.save()
                    saved_at = self.p.env_steps
            if not self.p.curve or self.p.curve[-1]["env_steps"] < self.p.env_steps:
                self.evaluate()
            self.p.seconds += time.perf_counter() - self.started
            self.started = time.perf_counter()
            self.save()
            self.bar.close()
        finally:
            if self.log is not None:
                self.log.close()
            self.store.shrink()
            self.store.close()
        return self.model

    def write_model(self, config_record: dict[str, Any] | None) -> Path:
        """The final model as a checkpoint ``wmrobot plan`` takes (and, with ``learn.actor=sac``,
        the SAC agent as ``agent.zip``: ``wmrobot plan dream_agents=[out/agent.zip]``)."""
        store = EpisodeStore.open(str(self.out / DATASET))
        meta = {
            "dataset": {
                "path": str(self.out / DATASET),
                "fingerprint": store.fingerprint(),
                "episodes": store.n_episodes,
                "transitions": store.n_transitions,
            },
            "env": store.attrs["env"],
            "obs_key": self.model.state_key,
            "input_keys": dict(self.model.input_keys),
            "task": self.model.task,
            "steps": self.p.updates,
            "seed": self.seed,
            "learn": {"env_steps": self.p.env_steps, "curve": self.p.curve},
            "versions": versions(),
            "config": config_record or {},
        }
        if self.branched is not None:  # the SAC agent, for `wmrobot plan dream_agents=[...]`
            self.branched.policy.save(self.out / AGENT)
        return save_checkpoint(self.model, self.out / CHECKPOINT, meta)


def _finite(loss: float, batch: Any) -> None:
    if not math.isfinite(loss):
        raise DatasetError(
            f"the world model's loss became {loss}; lower model.train.lr or check the env's "
            f"observations and rewards for NaN/Inf"
        )


class _Counted(gym.Wrapper):
    """Calls ``hook()`` after every step of the env."""

    def __init__(self, env: gym.Env, hook: Any) -> None:
        super().__init__(env)
        self.hook = hook

    def step(self, action: Any):
        out = self.env.step(action)
        self.hook()
        return out


class _Acting:
    """The collector's policy protocol around a function of the observation."""

    def __init__(self, act: Any) -> None:
        self.act = act

    def reset(self, rng: np.random.Generator) -> None:
        pass


def write_curve(out: Path, rows: list[dict[str, float]], title: str, goal: bool = False) -> None:
    """``curve.csv`` and ``curve.png``: evaluation return (mean ± std over the fixed episodes),
    or a goal task's success rate, against env steps."""

    def write(f: Any) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(CURVE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
        f.write(text.getvalue().encode())

    write_atomically(out / CURVE, write, sync=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([r["env_steps"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if goal:
        y = 100 * np.array([r["success_mean"] for r in rows])
        ax.plot(x, y, marker="o", color="#4C72B0")
        ax.set(ylabel="evaluation success (%)", ylim=(-2, 102))
    else:
        y = np.array([r["return_mean"] for r in rows])
        s = np.array([r["return_std"] for r in rows])
        ax.plot(x, y, marker="o", color="#4C72B0")
        ax.fill_between(x, y - s, y + s, alpha=0.25, color="#4C72B0")
        ax.set(ylabel="evaluation return")
    ax.set(xlabel="env steps (seed data included)", title=title)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=100)
    plt.close(fig)


def learn(
    out: str | Path,
    env_id: str,
    env_kwargs: dict[str, Any],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    planner: PlannerConfig,
    cfg: LearnConfig,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    config_record: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    branch: BranchConfig | None = None,
) -> Learner:
    """Run (or resume) the online loop into ``out`` (see the module's docstring); returns the
    learner, whose ``p.curve`` is the learning curve. ``overrides``: the command line's, kept in
    ``out/overrides.json`` for a resume that names only ``out``."""
    learner = Learner(Path(out), env_id, env_kwargs, model_cfg, train_cfg, planner, cfg, seed,
                      progress, overrides, branch)  # fmt: skip
    learner.run(resume)
    learner.write_model(config_record)
    return learner
