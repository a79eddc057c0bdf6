"""Mode-1's compiled actor: the model's export run by the Numba layer kernels, one call per
decision (normalise, encode, actor, tanh, bounds; the hybrid's imagined rollout likewise)."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from wmrobot.planners.numba.kernels import FASTMATH, MLPWeights, run_rows


@njit(cache=True, fastmath=FASTMATH)
def _actor_actions(actor, mid, half, z, goal_z):
    """The actor on [z, goal_z] (B, D each), tanh, mapped onto (mid +- half) -> (B, A)."""
    rows, d = z.shape
    pair = np.empty((rows, 2 * d), np.float32)
    for r in range(rows):
        for j in range(d):
            pair[r, j], pair[r, d + j] = z[r, j], goal_z[r, j]
    action = run_rows(actor, 0, len(actor[0]), pair)
    for r in range(rows):
        for j in range(action.shape[1]):
            action[r, j] = mid[j] + np.tanh(action[r, j]) * half[j]
    return action


@njit(cache=True, fastmath=FASTMATH)
def _act_rows(encoder, actor, mean, std, mid, half, obs, goal):
    """Mode-1 in one call: encode the normalised observations and goals (B, O) with one
    network, the actor on [z, z_goal], tanh, scaled to the bounds (mid +- half) -> (B, A)."""
    rows, width = obs.shape
    both = np.empty((2 * rows, width), np.float32)
    for r in range(rows):
        for j in range(width):
            both[r, j] = (obs[r, j] - mean[j]) / std[j]
            both[rows + r, j] = (goal[r, j] - mean[j]) / std[j]
    z = run_rows(encoder, 0, len(encoder[0]), both)
    return _actor_actions(actor, mid, half, z[:rows], z[rows:])


@njit(cache=True, fastmath=FASTMATH)
def _actor_rollout(actor, predictor, mid, half, z, goal_z, horizon):
    """The actor's actions (B, H, A) along its own imagined rollout z' = z + f([z, a]), from
    latents z and goal latents goal_z (B, D)."""
    rows, d = z.shape
    a_dim = mid.shape[0]
    actions = np.empty((rows, horizon, a_dim), np.float32)
    step = np.empty((rows, d + a_dim), np.float32)
    z = z.copy()
    for h in range(horizon):
        a = _actor_actions(actor, mid, half, z, goal_z)
        for r in range(rows):
            for j in range(d):
                step[r, j] = z[r, j]
            for j in range(a_dim):
                actions[r, h, j] = step[r, d + j] = a[r, j]
        delta = run_rows(predictor, 0, len(predictor[0]), step)
        for r in range(rows):
            for j in range(d):
                z[r, j] += delta[r, j]
    return actions


def run_actor_rollout(
    actor: MLPWeights,
    predictor: MLPWeights,
    bounds: tuple[np.ndarray, np.ndarray],
    z: ArrayLike,
    goal_z: ArrayLike,
    horizon: int,
) -> np.ndarray:
    """The actor's actions (B, H, A) along its own rollout through a residual MLP predictor,
    from latents (B, D), mapped onto ``bounds``' (mid +- half); compiled, in one call."""
    z, goal_z = np.ascontiguousarray(z, np.float32), np.ascontiguousarray(goal_z, np.float32)
    mid, half = bounds
    return _actor_rollout(tuple(actor), tuple(predictor), mid, half, z, goal_z, horizon)


def run_actor(
    encoder: MLPWeights,
    actor: MLPWeights,
    bounds: tuple[np.ndarray, ...],
    obs: ArrayLike,
    goal: ArrayLike,
) -> np.ndarray:
    """The Mode-1 action, compiled: obs and goal states (B, O) normalised by ``bounds``'
    (mean, std), encoded, the actor on both latents, tanh, mapped onto (mid +- half) ->
    (B, A) float32. One call: a NumPy step between the networks costs about as much as one."""
    mean, std, mid, half = bounds
    obs, goal = np.ascontiguousarray(obs, np.float32), np.ascontiguousarray(goal, np.float32)
    return _act_rows(tuple(encoder), tuple(actor), mean, std, mid, half, obs, goal)
