"""Imagined steps per second of ``DreamVecEnv`` on one core, beside the real env's.

The dream's promise is speed: an agent that learns in the model takes its steps from a batched
predictor pass instead of the physics. For each task this builds the default-size world model
of ``wmrobot train`` for a small dataset of the task (the weights do not change the cost of a
step, so it is not trained), steps ``DreamVecEnv`` with N envs at once, and steps the real env
(gymnasium, one env, the same uniform random actions, resets included) in the same process, on
one thread, alternating rounds so that a busy machine slows both alike. Run::

    python benchmarks/dream_throughput.py [--envs 1 16 256 1024] [--rounds 3] [--ensemble 1 3]
        [--compile]

Prints steps/s and dream / real per task, ensemble size K and N (the median over rounds). With
K > 1 (``model.ensemble=K``) every step also runs the K - 1 other predictors for the MOPO
penalty (``dream.penalty``). ``--compile`` adds rows with the step through ``torch.compile``
(``dream.compile=true``), whose compilation (once per N) is not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# (config name, collect arguments, train overrides): PointMaze with the default goal model,
# HalfCheetah with the default reward model.
TASKS = {
    "PointMaze U-maze": ("pointmaze_umaze", "model=state_mlp"),
    "HalfCheetah-v5": ("halfcheetah", "model=reward_mlp"),
}


def build(env: str, model: str, root: Path, ensemble: int = 1):
    from wmrobot.cli_common import compose
    from wmrobot.config import validate
    from wmrobot.datasets import EpisodeStore, collect
    from wmrobot.rl.dream import dataset_latents
    from wmrobot.steps import model_config as _model_config
    from wmrobot.train.data import build_model

    env_cfg = validate("collect", compose("collect", [f"env={env}"])).env
    path = root / f"{env}.zarr"
    collect(str(path), env_cfg.id, dict(env_cfg.kwargs), episodes=2, seed=0, progress=False)
    store = EpisodeStore.open(path)
    train = validate("train", compose("train", [f"dataset={path}", model,
                                                f"model.ensemble={ensemble}"]))  # fmt: skip
    torch.manual_seed(0)
    wm = build_model(store, _model_config(train.model)).eval()
    starts, goals = dataset_latents(wm, store)
    return wm, starts, goals, env_cfg


def dream_env(model, starts, goals, n: int, compile: bool):
    from wmrobot.rl.dream import DreamVecEnv

    penalty = 1.0 if len(model.members) else 0.0
    return DreamVecEnv(model, starts, goals, num_envs=n, horizon=1000, seed=0, penalty=penalty,
                       compile=compile)  # fmt: skip


def dream_rate(env, seconds: float = 1.0) -> float:
    n = env.num_envs
    env.reset()
    low, high = env.action_space.low, env.action_space.high
    actions = np.random.default_rng(0).uniform(low, high, (64, n, len(low))).astype(np.float32)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions:
            env.step(a)
        steps += len(actions) * n
    return steps / (time.perf_counter() - start)


def real_rate(env_cfg, seconds: float = 1.0) -> float:
    from wmrobot.envs import make_env

    env = make_env(env_cfg.id, dict(env_cfg.kwargs))
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(256)]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        steps += len(actions)
    env.close()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 16, 256, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ensemble", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--compile", action="store_true", help="also dream.compile=true rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("MUJOCO_GL", "egl")
    with tempfile.TemporaryDirectory() as tmp:
        head = f"{'task':<18} {'K':>2} {'step':>8} {'N envs':>7} {'dream steps/s':>14}"
        print(f"{head} {'real steps/s':>13} {'ratio':>7}")
        for task, (env, model) in TASKS.items():
            for k in args.ensemble:
                wm, starts, goals, env_cfg = build(env, model, Path(tmp), k)
                for compiled in (False, True) if args.compile else (False,):
                    for n in args.envs:
                        dream_env_n = dream_env(wm, starts, goals, n, compiled)
                        step = "compiled" if dream_env_n.compiled else "eager"
                        dream, real = [], []
                        for _ in range(args.rounds):
                            real.append(real_rate(env_cfg))
                            dream.append(dream_rate(dream_env_n))
                        d, r = statistics.median(dream), statistics.median(real)
                        print(f"{task:<18} {k:>2} {step:>8} {n:>7} {d:>14,.0f} {r:>13,.0f} "
                              f"{d / r:>7.1f}")  # fmt: skip
        print("one thread; `wmrobot train`'s default model sizes; K: predictors (model.ensemble)")


if __name__ == "__main__":
    main()
