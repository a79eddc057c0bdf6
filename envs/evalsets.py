"""Fixed, seeded start/goal sets for honest evaluation:
drawn by a seed, and for the suite's tasks also frozen in versioned files (``evalsets/``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from wmrobot.envs.make import make_env
from wmrobot.errors import EnvError

EVALSET_DIR = Path(__file__).parent / "evalsets"
PAIRS = 50
SEED = 1234

# name -> (env id, env kwargs, step budget per episode). The files hold the drawn pairs, so a
# change to a task's sampling cannot silently change what every result was measured on: the
# test suite redraws each set and compares; a deliberate change bumps ``version``.
EVALSETS: dict[str, tuple[str, dict[str, Any], int]] = {
    "pointmaze-umaze": ("wmrobot/PointMaze-v0", {"layout": "umaze"}, 100),
    "pointmaze-medium": ("wmrobot/PointMaze-v0", {"layout": "medium"}, 250),
    "tworoom": ("wmrobot/TwoRoom-v0", {}, 100),
    "reacher": ("wmrobot/Reacher-v0", {}, 50),
    "reacher-pose": ("wmrobot/ReacherPose-v0", {}, 50),
    "push": ("wmrobot/Push-v0", {}, 300),
}


def eval_pairs(
    env: gym.Env, n: int, seed: int, max_distance: float | None = None
) -> list[dict[str, list[float]]]:
    """``n`` start/goal pairs drawn with ``seed``: the same list on every machine and run.

    ``max_distance`` keeps only pairs whose goal is that close to the start (an easy set; for
    tasks whose start and goal are both positions). Each pair is a reset ``options`` dict:
    ``env.reset(options=pair)``.
    """
    base = env.unwrapped
    if not hasattr(base, "sample_start_goal"):
        raise EnvError(f"env {env.spec.id if env.spec else base!r} is not goal-conditioned")
    rng = np.random.default_rng(seed)
    pairs: list[dict[str, list[float]]] = []
    for _ in range(1000 * n):
        if len(pairs) == n:
            break
        start, goal = base.sample_start_goal(rng)
        if max_distance is not None and start.shape != goal.shape:
            raise EnvError("max_distance needs a task whose start and goal are both positions")
        if max_distance is None or np.linalg.norm(goal - start) <= max_distance:
            pairs.append({"start": start.round(4).tolist(), "goal": goal.round(4).tolist()})
    if len(pairs) < n:
        raise EnvError(f"could not draw {n} start/goal pairs within max_distance={max_distance}")
    return pairs


@dataclass(frozen=True)
class EvalSet:
    """A fixed evaluation set: ``pairs`` (reset options) of one env, each episode given at most
    ``budget`` steps."""

    name: str
    env_id: str
    kwargs: dict[str, Any]
    budget: int
    seed: int
    pairs: list[dict[str, list[float]]] = field(repr=False)
    version: int = 1

    def make_env(self, **extra: Any) -> gym.Env:
        return make_env(self.env_id, self.kwargs, max_episode_steps=self.budget, **extra)


def draw_evalset(name: str, version: int = 1) -> EvalSet:
    """Draw evaluation set ``name`` from its task's sampler (what the frozen file holds)."""
    env_id, kwargs, budget = _spec(name)
    env = make_env(env_id, kwargs)
    pairs = eval_pairs(env, PAIRS, SEED)
    env.close()
    return EvalSet(name, env_id, kwargs, budget, SEED, pairs, version)


def load_evalset(name: str) -> EvalSet:
    """The frozen evaluation set ``name`` (see ``EVALSETS``), as its file holds it."""
    _spec(name)
    path = EVALSET_DIR / f"{name}.json"
    if not path.exists():
        raise EnvError(
            f"evaluation set file {path} is missing; run `wmrobot envs evalsets --write`"
        )
    return EvalSet(**json.loads(path.read_text()))


def write_evalsets(names: list[str] | None = None) -> list[Path]:
    """(Re)write the frozen files of ``names`` (default: all), keeping each file's version."""
    EVALSET_DIR.mkdir(exist_ok=True)
    written = []
    for name in names or list(EVALSETS):
        path = EVALSET_DIR / f"{name}.json"
        version = json.loads(path.read_text())["version"] if path.exists() else 1
        path.write_text(json.dumps(asdict(draw_evalset(name, version)), indent=1) + "\n")
        written.append(path)
    return written


def _spec(name: str) -> tuple[str, dict[str, Any], int]:
    if name not in EVALSETS:
        raise EnvError(f"unknown evaluation set {name!r}; choose one of {sorted(EVALSETS)}")
    return EVALSETS[name]


def success_rate(
    evalset: EvalSet, policy: str = "expert", noise: float = 0.0, seed: int = 0
) -> tuple[float, float]:
    """Success rate of the task's scripted expert (``noise``: its action noise) or of uniform
    random actions on ``evalset``, and the mean steps of the successful episodes."""
    from wmrobot.envs.experts import make_expert

    env = evalset.make_env()
    rng = np.random.default_rng(seed)
    if policy == "expert":
        expert = make_expert(env, noise=noise)
    elif policy != "random":
        raise EnvError(f"unknown policy {policy!r}; choose expert or random")
    wins, steps = 0, []
    for pair in evalset.pairs:
        obs, _ = env.reset(seed=seed, options=pair)
        if policy == "expert":
            expert.reset(rng)
        for t in range(1, evalset.budget + 1):
            if policy == "expert":
                action = expert.act(obs)
            else:
                action = rng.uniform(env.action_space.low, env.action_space.high)
            obs, _, terminated, truncated, info = env.step(action.astype(np.float32))
            if info["is_success"]:
                wins += 1
                steps.append(t)
                break
            if terminated or truncated:
                break
    env.close()
    return wins / len(evalset.pairs), float(np.mean(steps)) if steps else float("nan")
