"""Re-simulate recorded episodes from their physics state and actions; branch from any row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from wmrobot.datasets.store import EpisodeStore
from wmrobot.envs import has_physics, make_env, set_physics_state
from wmrobot.errors import DatasetError


@dataclass
class ReplayResult:
    """Replayed observations of one episode and their largest gap to the recorded ones."""

    episode: int
    steps: int
    observations: dict[str, np.ndarray]  # key -> (T+1, ...), keys as in the dataset
    max_abs_diff: dict[str, float]

    @property
    def exact(self) -> bool:
        return all(d == 0.0 for d in self.max_abs_diff.values())


def _open(dataset: EpisodeStore | str) -> EpisodeStore:
    return dataset if isinstance(dataset, EpisodeStore) else EpisodeStore.open(dataset)


def env_for(store: EpisodeStore, **extra: Any) -> gym.Env:
    """The env a dataset was collected with (its id and kwargs)."""
    if "physics" not in store.keys:  # checked first: the env of an imported dataset may be absent
        raise DatasetError(
            f"{store.path!r} has no MuJoCo physics state to restore (an import from Minari has "
            f"none); only datasets made by `wmrobot collect` can be replayed"
        )
    env = make_env(store.attrs["env"]["id"], store.attrs["env"]["kwargs"], **extra)
    if not has_physics(env):
        env.close()
        raise DatasetError(f"{store.path!r} has no MuJoCo physics state to restore")
    return env


def restore(env: gym.Env, store: EpisodeStore, row: int) -> None:
    """Put ``env`` in the recorded state of ``row``: its episode's task (reset with the
    recorded seed and factors of variation: goal, layout) and its physics. Step it from there
    to branch a counterfactual rollout."""
    if not 0 <= row < store.n_rows:
        raise IndexError(f"row {row} out of range for {store.n_rows} committed rows")
    episode = int(np.searchsorted(store.episode_ends, row, side="right"))
    factors = store.factors(episode)  # what the seed drew, pinned (layout lives in the model)
    env.reset(
        seed=int(store.meta("seed")[episode]), options={"factors": factors} if factors else None
    )
    set_physics_state(env, store.read("data/physics", row))


def replay(dataset: EpisodeStore | str, episode: int, env: gym.Env | None = None) -> ReplayResult:
    """Re-simulate ``episode`` from its first recorded state with its recorded actions and
    compare every observation with the recorded one. ``env`` (from :func:`env_for`) is reused
    when given, as when replaying many episodes; otherwise one is made and closed."""
    store = _open(dataset)
    own = env is None
    env = env_for(store) if env is None else env
    rows = store.episode(episode)
    restore(env, store, store.episode_bounds(episode)[0])
    base = env.unwrapped  # no TimeLimit: the recorded actions decide the length
    obs_keys = [k for k in rows if k == "obs" or k.startswith("obs/")]
    replayed: dict[str, list[np.ndarray]] = {k: [rows[k][0]] for k in obs_keys}
    for action in rows["action"][:-1]:
        obs = base.step(action)[0]
        for k in obs_keys:
            replayed[k].append(obs if k == "obs" else obs[k.split("/", 1)[1]])
    if own:
        env.close()
    observations = {k: np.stack(v) for k, v in replayed.items()}
    diffs = {
        k: float(np.max(np.abs(observations[k].astype(np.float64) - rows[k].astype(np.float64))))
        for k in obs_keys
    }
    return ReplayResult(episode, len(rows["action"]) - 1, observations, diffs)
