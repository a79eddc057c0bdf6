"""The model-free baselines: stable-baselines3 SAC, with hindsight relabelling (HER) on goal
tasks, trained online; seeds in parallel processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3 import SAC, HerReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from wmrobot.envs import make_env
from wmrobot.errors import ConfigError, check_range
from wmrobot.eval.rollout import decision_latency_ms, evaluate

# rl.algo -> the name of its row in reports.
ALGOS = {"sac": "SAC (SB3)", "sac_her": "SAC+HER (SB3)"}
GOAL_STRATEGIES = ("future", "final", "episode")
GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")


@dataclass
class RLConfig:
    """SB3 SAC's settings (configs/rl/<algo>.yaml). ``algo="sac_her"`` adds a HerReplayBuffer
    that relabels each sampled transition, with probability ``n_sampled_goal`` /
    (``n_sampled_goal`` + 1), with a goal the episode achieved (``goal_selection_strategy``)."""

    algo: str
    learning_starts: int
    batch_size: int
    learning_rate: float
    gamma: float
    net_arch: list[int]
    n_sampled_goal: int = 4
    goal_selection_strategy: str = "future"

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first value out of range and the fix."""
        if self.algo not in ALGOS:
            _bad("algo", self.algo, f"is not available; choose one of {list(ALGOS)}")
        check_range("rl.learning_starts", self.learning_starts, 0)
        check_range("rl.batch_size", self.batch_size, 1)
        check_range("rl.n_sampled_goal", self.n_sampled_goal, 1)
        check_range("rl.learning_rate", self.learning_rate, 0, closed=False)
        check_range("rl.gamma", self.gamma, 0, 1)
        if any(width < 1 for width in self.net_arch):
            _bad("net_arch", list(self.net_arch), "is out of range: each layer width must be >= 1")
        if self.goal_selection_strategy not in GOAL_STRATEGIES:
            _bad(
                "goal_selection_strategy",
                self.goal_selection_strategy,
                f"is not a HER strategy; choose one of {list(GOAL_STRATEGIES)}",
            )

    @property
    def label(self) -> str:
        """The row name of this baseline in reports, e.g. ``SAC+HER (SB3)``."""
        return ALGOS[self.algo]


def _bad(key: str, value: Any, fix: str) -> None:
    raise ConfigError(f"rl.{key}={value!r} {fix}")


def is_goal_env(env: gym.Env) -> bool:
    """Whether ``env`` is a goal task HER can relabel: dict observations with ``observation``,
    ``achieved_goal`` and ``desired_goal``, and a vectorised ``compute_reward``."""
    space = env.observation_space
    return (
        isinstance(space, gym.spaces.Dict)
        and all(k in space.spaces for k in GOAL_KEYS)
        and callable(getattr(env.unwrapped, "compute_reward", None))
    )


def check_task(env_id: str, env: gym.Env, cfg: RLConfig) -> None:
    """Refuse ``sac_her`` on an env without goals, in one line that names the fix."""
    if cfg.algo == "sac_her" and not is_goal_env(env):
        raise ConfigError(
            f"rl=sac_her needs a goal task (dict observation with {list(GOAL_KEYS)} and "
            f"compute_reward); {env_id} has none: use rl=sac"
        )


def policy_name(env: gym.Env) -> str:
    """The SB3 policy class for ``env``'s observations: one network input per Dict key, or one."""
    return "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "MlpPolicy"


def make_sac(env: gym.Env, cfg: RLConfig, steps: int, seed: int) -> SAC:
    """An untrained SB3 SAC on ``env`` with ``cfg``'s settings (a HER buffer for ``sac_her``)."""
    her = cfg.algo == "sac_her"
    return SAC(
        policy_name(env),
        env,
        learning_starts=min(cfg.learning_starts, steps),
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        policy_kwargs={"net_arch": list(cfg.net_arch)},
        replay_buffer_class=HerReplayBuffer if her else None,
        replay_buffer_kwargs=(
            {
                "n_sampled_goal": cfg.n_sampled_goal,
                "goal_selection_strategy": cfg.goal_selection_strategy,
            }
            if her
            else None
        ),
        seed=seed,
        device="cpu",
        verbose=0,
    )


class _Progress(BaseCallback):
    """Reports env steps to the parent process every ``every`` steps."""

    def __init__(self, queue: Any, every: int = 250) -> None:
        super().__init__()
        self.queue, self.every = queue, every

    def _on_step(self) -> bool:
        if self.queue is not None and self.num_timesteps % self.every == 0:
            self.queue.put(self.every)
        return True


def train_and_evaluate(
    env_id: str,
    env_kwargs: dict[str, Any],
    cfg: RLConfig,
    steps: int,
    seed: int,
    pairs: list[dict[str, Any]],
    budget: int,
    out: str,
    queue: Any = None,
) -> dict[str, Any]:
    """Train ``cfg.algo`` for ``steps`` env steps with ``seed``, save it, run it on ``pairs``."""
    torch.set_num_threads(1)
    env = make_env(env_id, env_kwargs, max_episode_steps=budget)
    check_task(env_id, env, cfg)
    model = make_sac(env, cfg, steps, seed)
    model.learn(total_timesteps=steps, callback=_Progress(queue))
    model.save(Path(out) / f"{cfg.algo}_seed{seed}.zip")
    records = evaluate(model, env_id, env_kwargs, pairs, budget)
    obs, _ = env.reset(seed=seed, options=pairs[0])
    return {
        "seed": seed,
        "records": [r.as_dict() for r in records],
        "latency_ms": decision_latency_ms(model, obs),
    }


def run_seeds(
    env_id: str,
    env_kwargs: dict[str, Any],
    cfg: RLConfig,
    steps: int,
    seeds: list[int],
    pairs: list[dict[str, Any]],
    budget: int,
    out: str | Path,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train and evaluate one agent per seed, ``workers`` at a time (default: one per core)."""
    probe = make_env(env_id, env_kwargs)
    check_task(env_id, probe, cfg)  # here, so a refusal is one line before any process starts
    probe.close()
    workers = workers or min(len(seeds), os.cpu_count() or 1)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        queue = manager.Queue()
        futures = [
            pool.submit(
                train_and_evaluate,
                env_id,
                env_kwargs,
                cfg,
                steps,
                s,
                pairs,
                budget,
                str(out),
                queue,
            )
            for s in seeds
        ]
        bar = tqdm(
            total=steps * len(seeds),
            desc=cfg.label,
            unit="step",
            disable=None if progress else True,
            leave=False,
        )
        while not all(f.done() for f in futures):
            try:
                bar.update(queue.get(timeout=0.5))
            except queue_mod.Empty:
                pass
        bar.close()
        return [f.result() for f in futures]
