"""The open-loop fast path: episodes whose actions ignore the observations are simulated in
batches by ``mujoco.rollout`` (in C, on several threads), and observations, rewards and
terminations are computed from the recorded physics states afterwards.

Each supported env has an *observer* that turns states and actions into what the env's own
``step`` would have returned. Observers read the env's private reward weights, so each is
tied to one env class; ``tests/datasets/accel/`` holds the rows equal, bit for bit, to
stepping the env.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from mujoco import rollout

from wmrobot.datasets.episodes import episode_rows
from wmrobot.datasets.policies import PolicySpec, make_policy
from wmrobot.envs import get_physics_state, make_env
from wmrobot.envs.pointmaze import PointMazeEnv

# observer(env, qpos (T+1, nq), qvel (T+1, nv), actions (T, A), first_obs) ->
#   (obs rows (T+1, ...) or {key: rows}, reward (T,) float64, terminated (T,), success (T,))
Observer = Callable[..., tuple[Any, np.ndarray, np.ndarray, np.ndarray]]


def _half_cheetah(env, qpos, qvel, actions, first_obs):
    base = env.unwrapped
    position = qpos[:, 1:] if base._exclude_current_positions_from_observation else qpos
    obs = np.concatenate([position, qvel], axis=1)
    x_velocity = (qpos[1:, 0] - qpos[:-1, 0]) / base.dt
    ctrl_cost = base._ctrl_cost_weight * np.sum(np.square(actions), axis=1)
    reward = base._forward_reward_weight * x_velocity - ctrl_cost
    never = np.zeros(len(actions), dtype=bool)
    return obs, reward, never, never


def _pointmaze(env, qpos, qvel, actions, first_obs):
    achieved = qpos[:, :2].astype(np.float32)
    goal = np.broadcast_to(first_obs["desired_goal"], achieved.shape)
    obs = {
        "observation": np.concatenate([qpos[:, :2], qvel[:, :2]], axis=1).astype(np.float32),
        "achieved_goal": achieved,
        "desired_goal": np.array(goal),
    }
    # As the env: from the float32 observation, with the env's own vectorised functions.
    base = env.unwrapped
    distance = base.distance(achieved[1:], goal[1:])
    success = base.is_success(achieved[1:], goal[1:])
    return obs, -distance, success, success


OBSERVERS: dict[str, Observer] = {
    "gymnasium.envs.mujoco.half_cheetah_v5:HalfCheetahEnv": _half_cheetah,
    f"{PointMazeEnv.__module__}:{PointMazeEnv.__name__}": _pointmaze,
}


def _key(env: gym.Env) -> str:
    cls = type(env.unwrapped)
    return f"{cls.__module__}:{cls.__name__}"


def unsupported_reason(env: gym.Env, policy: PolicySpec, pixels: int | None) -> str | None:
    """Why the fast path cannot collect this (None when it can)."""
    if not policy.open_loop:
        return f"policy={policy.name} reacts to observations"
    if pixels:
        return "pixels are rendered step by step"
    if getattr(env.unwrapped, "pixels", False):
        return "pixel observations are rendered step by step"
    varying = [
        f.name
        for f in getattr(env.unwrapped, "FACTORS", ())
        if f.group != "visual" and len(set(env.unwrapped.factor_ranges[f.name])) > 1
    ]
    if varying:
        return f"factors {varying} change the physics from episode to episode"
    if _key(env) not in OBSERVERS:
        return f"no observer for {_key(env)} (supported: {sorted(OBSERVERS)})"
    if not (env.spec and env.spec.max_episode_steps):
        return "the env has no time limit (max_episode_steps)"
    return None


def rollout_episodes(
    env_id: str,
    env_kwargs: dict[str, Any],
    policy: PolicySpec,
    seeds: Iterable[int],
    threads: int = 1,
    batch: int | None = None,
) -> Iterator[dict[str, Any]]:
    """The episodes :func:`wmrobot.datasets.episodes.run_episode` would record for ``seeds``,
    in order, simulated ``batch`` at a time by ``mujoco.rollout`` on ``threads`` threads."""
    env = make_env(env_id, env_kwargs)
    base = env.unwrapped
    model = base.model
    datas = [mujoco.MjData(model) for _ in range(threads)]
    act = make_policy(policy, env)
    observe = OBSERVERS[_key(env)]
    steps, frame_skip = env.spec.max_episode_steps, getattr(base, "frame_skip", 1)
    batch = batch or 8 * threads
    seeds = iter(seeds)
    try:
        while chunk := list(itertools.islice(seeds, batch)):
            starts, warm, first_obs, actions = [], [], [], []
            factors = []
            for seed in chunk:
                obs, info = env.reset(seed=seed)
                factors.append(info.get("factors"))
                act.reset(np.random.default_rng(seed))
                starts.append(get_physics_state(env))
                warm.append(base.data.qacc_warmstart.copy())
                first_obs.append(obs)
                actions.append(act.actions(steps))
            actions = np.stack(actions)  # (B, T, A)
            # Each action is held for frame_skip physics steps, as the env's step does.
            control = np.repeat(actions.astype(np.float64), frame_skip, axis=1)
            states, _ = rollout.rollout(
                model, datas, np.stack(starts), control, initial_warmstart=np.stack(warm)
            )
            states = states[:, frame_skip - 1 :: frame_skip]  # the state after each env step
            for i, seed in enumerate(chunk):
                path = np.concatenate([starts[i][None], states[i]])
                yield _episode(
                    env, observe, path, actions[i], first_obs[i], seed, steps, factors[i]
                )
    finally:
        env.close()


def _episode(env, observe, states, actions, first_obs, seed, steps, factors) -> dict[str, Any]:
    model = env.unwrapped.model
    qpos = states[:, 1 : 1 + model.nq]  # mjSTATE_FULLPHYSICS begins with time, qpos, qvel
    qvel = states[:, 1 + model.nq : 1 + model.nq + model.nv]
    obs, reward, terminated, success = observe(env, qpos, qvel, actions, first_obs)
    hits = np.flatnonzero(terminated)
    length = int(hits[0]) + 1 if len(hits) else steps  # the env stops at its first termination
    rows = slice(0, length + 1)
    truncated = np.zeros(length, dtype=bool)
    truncated[-1] = length == steps  # the time limit, as gymnasium's TimeLimit sets it
    obs_rows = (
        {f"obs/{k}": v[rows] for k, v in obs.items()}
        if isinstance(obs, dict)
        else {"obs": obs[rows]}
    )
    return episode_rows(
        env,
        obs_rows,
        actions[:length],
        reward[:length],
        terminated[:length],
        truncated,
        seed,
        success[:length].any(),
        physics=states[rows],
        factors=factors,
    )
