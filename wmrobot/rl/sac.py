"""The model-free baseline: stable-baselines3 SAC trained online, seeds in parallel processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from wmrobot.envs import make_env
from wmrobot.errors import ConfigError, check_range
from wmrobot.eval.rollout import decision_latency_ms, evaluate

RL_ALGOS = ["sac"]


@dataclass
class RLConfig:
    algo: str
    learning_starts: int
    batch_size: int
    learning_rate: float
    gamma: float
    net_arch: list[int]

    def __post_init__(self) -> None:
        if self.algo not in RL_ALGOS:
            raise ConfigError(f"rl.algo={self.algo!r} is not available; choose one of {RL_ALGOS}")
        check_range("rl.learning_starts", self.learning_starts, 0)
        check_range("rl.batch_size", self.batch_size, 1)
        check_range("rl.learning_rate", self.learning_rate, 0, closed=False)
        check_range("rl.gamma", self.gamma, 0, 1)


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
    """Train SAC for ``steps`` env steps with ``seed``, save it, evaluate it on ``pairs``."""
    torch.set_num_threads(1)
    env = make_env(env_id, env_kwargs, max_episode_steps=budget)
    model = SAC(
        "MultiInputPolicy",
        env,
        learning_starts=min(cfg.learning_starts, steps),
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        policy_kwargs={"net_arch": list(cfg.net_arch)},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=steps, callback=_Progress(queue))
    model.save(Path(out) / f"sac_seed{seed}.zip")
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
    """Train and evaluate one SAC per seed, ``workers`` at a time (default: one per core)."""
    if cfg.algo != "sac":
        raise ValueError(f"rl.algo={cfg.algo!r} is not available yet; use rl=sac")
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
            desc="SAC",
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
