"""Peer tools timed on the episodes wmrobot's collector runs, for side-by-side benchmarks."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from wmrobot.datasets.episodes import episode_seed
from wmrobot.datasets.policies import RandomPolicy


def minari_collect(
    env_id: str,
    episodes: int,
    seed: int,
    actions_for: Callable[[gym.spaces.Box], RandomPolicy] = RandomPolicy,
) -> tuple[int, float]:
    """Minari's ``DataCollector`` on the episodes ``collect(env_id, episodes=episodes,
    seed=seed)`` runs: the same reset seeds, and actions from ``actions_for(action_space)``
    (a policy with ``reset(rng)`` and ``act(obs)``) reset with each episode's seed.

    Returns (transitions, seconds), the seconds counting env creation, stepping and
    ``create_dataset``. The dataset goes to a temporary MINARI_DATASETS_PATH, removed after.
    Needs ``pip install 'minari[create,hdf5]'`` (the DataCollector uses jax).
    """
    import jax.tree_util  # noqa: F401  (the DataCollector imports it at its first step: not timed)
    import minari

    import wmrobot.envs  # noqa: F401  (registers our ids)

    root = tempfile.mkdtemp(prefix="wmrobot-minari-")
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = root  # read by DataCollector and create_dataset
    try:
        start = time.perf_counter()
        env = minari.DataCollector(gym.make(env_id))
        policy = actions_for(env.action_space)
        steps = 0
        for index in range(episodes):
            s = episode_seed(seed, index)
            obs, _ = env.reset(seed=s)
            policy.reset(np.random.default_rng(s))
            done = False
            while not done:
                obs, _, terminated, truncated, _ = env.step(policy.act(obs))
                steps += 1
                done = terminated or truncated
        with warnings.catch_warnings():  # the metadata it recommends (a code link, ...)
            warnings.simplefilter("ignore", UserWarning)
            dataset = env.create_dataset(
                "bench/minari-collect-v0", algorithm_name="random", author="wmrobot benchmarks"
            )
        seconds = time.perf_counter() - start
        env.close()
        assert dataset.total_steps == steps, (dataset.total_steps, steps)
        return steps, seconds
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
        shutil.rmtree(root, ignore_errors=True)
