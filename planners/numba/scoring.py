"""The Numba backend's scoring: a model's export packed for the kernels, and the planners'
objective J of blocks of candidate action sequences (rollout, cost, value, smoothness)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from numba import njit
from numpy.typing import ArrayLike

from wmrobot.errors import ConfigError
from wmrobot.planners.base import Objective
from wmrobot.planners.config import PlannerConfig
from wmrobot.planners.dynamics import Dynamics
from wmrobot.planners.numba.kernels import (
    BLOCK,
    FASTMATH,
    MLPWeights,
    add,
    add_squared_difference,
    fma,
    load,
    mlp_block,
    pack_mlp,
    root_distance,
    run_rows,
    splat,
    store,
)

# The packed model must reproduce the torch one within this (relative) on a random probe.
EXPORT_TOLERANCE = 1e-4


class PackedModel(NamedTuple):
    """What the kernels need of a world model: its three MLPs and the cost's coefficients.

    The layers of the predictor, cost head and critic (empty without one) are concatenated
    into one :class:`MLPWeights`; ``layers`` (3, 2) holds each one's [first, end) layer;
    ``coef`` is (latent_weight, cost_weight, cost_eps, value_eps), the forms of
    :class:`~wmrobot.planners.dynamics.ModelExport`.
    """

    net: MLPWeights
    layers: np.ndarray
    coef: np.ndarray
    has_value: bool


PREDICTOR, COST_HEAD, CRITIC = 0, 1, 2


def _concat(nets: list[MLPWeights]) -> tuple[MLPWeights, np.ndarray]:
    """One :class:`MLPWeights` holding ``nets`` in turn, and each one's [first, end) layer."""
    layers, offsets, first, shift = [], [], 0, 0
    for net in nets:
        layers.append((first, first + len(net.ops)))
        offsets.append(net.offsets + shift)
        first, shift = first + len(net.ops), shift + net.params.size
    merged = MLPWeights(
        np.concatenate([net.ops for net in nets]),
        np.concatenate([net.dims for net in nets]),
        np.concatenate(offsets),
        np.concatenate([net.eps for net in nets]),
        np.concatenate([net.params for net in nets]),
    )
    return merged, np.array(layers, np.int64).reshape(-1, 2)


def pack_model(dynamics: Dynamics) -> PackedModel:
    """The kernels' copy of ``dynamics``, from its ``export()``
    (:class:`~wmrobot.planners.dynamics.ModelExport`).

    Raises :class:`ConfigError` for a model it cannot run (one without ``export()``, a GRU or
    transformer predictor, other layers), or one whose packed copy does not reproduce its
    torch rollout, cost and value on a random probe.
    """
    export_hook = getattr(dynamics, "export", None)
    if export_hook is None:
        raise ConfigError(
            f"the numba backend runs exported MLP world models; {type(dynamics).__name__} is "
            f"not one: use planner.backend=torch"
        )
    exported = export_hook()
    if exported.predictor_kind != "mlp":
        raise ConfigError(
            f"the numba backend runs MLP predictors; this model's is "
            f"model.predictor={exported.predictor_kind}: use planner.backend=torch"
        )
    d, a = exported.latent_dim, exported.action_dim
    has_value = bool(dynamics.has_value)
    nets = [
        pack_mlp(exported.predictor, d + a, "predictor"),
        pack_mlp(exported.cost_head, d, "cost head"),
    ]
    if has_value:
        nets.append(pack_mlp(exported.critic, d, "critic"))
    net, layers = _concat(nets)
    if not has_value:  # an empty layer range stands for the missing critic
        layers = np.concatenate([layers, [[len(net.ops), len(net.ops)]]])
    coef = (exported.latent_weight, exported.cost_weight, exported.cost_eps, exported.value_eps)
    packed = PackedModel(net, layers, np.array(coef, np.float32), has_value)
    _check_packed(dynamics, packed)
    return packed


def _check_packed(model: Dynamics, packed: PackedModel) -> None:
    """Score random candidates with every objective term on both ways; refuse a mismatch."""
    gen = torch.Generator().manual_seed(0)
    d, a, h = model.latent_dim, len(model.action_low), 3
    z0, goal = torch.randn(2, d, generator=gen), torch.randn(2, d, generator=gen)
    actions = torch.rand(2, 4, h, a, generator=gen) * 2 - 1
    probe = PlannerConfig(
        horizon=h,
        samples=4,
        iterations=1,
        elites=1,
        init_std=1.0,
        min_std=0.0,
        max_std=1.0,
        terminal_weight=2.0,
        value_weight=0.5,
        smooth_weight=0.1,
    )
    objective = Objective(model, probe)
    with torch.no_grad():
        expect = objective(z0, goal, actions).numpy()
    expect = np.where(np.isfinite(expect), expect, np.inf)  # as the planners count them
    got = score(packed, objective, z0, goal, actions)
    finite = np.isfinite(expect)
    error = np.inf  # unless both are finite at the same candidates
    if np.array_equal(finite, np.isfinite(got)):
        diff = np.abs(got[finite] - expect[finite]) / (1 + np.abs(expect[finite]))
        error = float(np.max(diff, initial=0.0))
    if not error <= EXPORT_TOLERANCE:
        raise ConfigError(
            f"the numba export of this {type(model).__name__} differs from its torch outputs "
            f"(relative error {error:.2g}): its rollout or cost is not the plain MLP form; use "
            f"planner.backend=torch"
        )


@njit(cache=True, fastmath=FASTMATH)
def score_block(first, count, net, layers, coef, has_value, z0, goal, embs, cand, step_w, cost):
    """cost[b, n] = J of the candidates i = b * count + n in [first, first + BLOCK) of cand
    (B, >= count, H, A), each the sequence cand[b, n] (H, A) from z0[b] to goal[b], or +inf if
    J is not finite; returns whether any was not. Past the last candidate, the block repeats it
    (computed, not stored).

    ``coef`` is (latent_weight, cost_weight, value_weight, smooth_weight, cost_eps,
    value_eps) (:func:`coefficients`); ``embs`` the goals'
    cost-head and critic embeddings, (B, E1) and (B, E2).
    """
    horizon, a_dim = cand.shape[2], cand.shape[3]
    last, d = cand.shape[0] * count - 1, z0.shape[1]
    rows = np.minimum(np.arange(first, first + BLOCK), last)
    bs, ns = rows // count, rows % count
    buf = np.empty((2, np.max(net[1]), BLOCK), np.float32)  # the widest layer's output
    # x: the block's state z (rows :d), then the step's action; the goal and its embeddings
    x = np.empty((d + a_dim, BLOCK), np.float32)
    g = np.empty((d, BLOCK), np.float32)
    cost_emb = np.empty((embs[0].shape[1], BLOCK), np.float32)
    value_emb = np.empty((embs[1].shape[1], BLOCK), np.float32)
    for r in range(BLOCK):
        b = bs[r]
        for j in range(d):
            x[j, r], g[j, r] = z0[b, j], goal[b, j]
        for j in range(cost_emb.shape[0]):
            cost_emb[j, r] = embs[0][b, j]
        for j in range(value_emb.shape[0]):
            value_emb[j, r] = embs[1][b, j]
    z = x[:d]
    total = splat(np.float32(0.0))
    zero = np.float32(0.0)
    for t in range(horizon):
        for r in range(BLOCK):
            for j in range(a_dim):
                x[d + j, r] = cand[bs[r], ns[r], t, j]
        delta = mlp_block(net, layers[PREDICTOR, 0], layers[PREDICTOR, 1], x, buf)
        distance = splat(zero)
        for j in range(d):
            zj = add(load(z[j]), load(delta[j]))
            store(z[j], zj)
            distance = add_squared_difference(distance, zj, load(g[j]))
        total = fma(total, step_w[t] * coef[0] / np.float32(d), distance)
        out = mlp_block(net, layers[COST_HEAD, 0], layers[COST_HEAD, 1], z, buf)
        task = root_distance(out, cost_emb, coef[4])
        total = fma(total, step_w[t] * coef[1], task)
    if has_value and coef[2] > 0:
        out = mlp_block(net, layers[CRITIC, 0], layers[CRITIC, 1], z, buf)
        total = fma(total, coef[2], root_distance(out, value_emb, coef[5]))
    totals = np.empty(BLOCK, np.float32)
    store(totals, total)
    bad = False
    for r in range(min(BLOCK, last + 1 - first)):
        actions = cand[bs[r], ns[r]]
        if coef[3] > 0:
            rough = np.float32(0.0)
            for t in range(1, horizon):
                for j in range(a_dim):
                    step = actions[t, j] - actions[t - 1, j]
                    rough += step * step
            totals[r] += coef[3] * rough
        finite = np.isfinite(totals[r])
        cost[bs[r], ns[r]] = totals[r] if finite else np.inf
        bad |= not finite
    return bad


@njit(cache=True, fastmath=FASTMATH)
def score_candidates(net, layers, coef, has_value, z0, goal, embs, cand, count, step_w, cost):
    """cost = J of the first ``count`` candidates of every row of cand (B, >= count, H, A),
    on this thread; returns whether any was not finite."""
    bad = False
    for first in range(0, cand.shape[0] * count, BLOCK):
        bad |= score_block(
            first, count, net, layers, coef, has_value, z0, goal, embs, cand, step_w, cost
        )
    return bad


def goal_embeddings(model: PackedModel, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cost head's and the critic's embeddings of each goal (B, D): (B, E1), (B, E2), by
    compiled kernels (one Python call per network: a NumPy forward cost more than the kernel).
    Up to ROW_BY_ROW goals go row by row, as the actor's do, so their sums run in another order
    than the candidates' lanes: the embeddings agree to float32 rounding."""
    net, embs = tuple(model.net), []
    for first, end in model.layers[[COST_HEAD, CRITIC]]:
        if end > first:
            embs.append(run_rows(net, first, end, goal))
        else:
            embs.append(np.zeros((goal.shape[0], 0), np.float32))
    return embs[0], embs[1]


def coefficients(model: PackedModel, value_weight: float, smooth_weight: float) -> np.ndarray:
    """The objective's coefficients as :func:`score_block` reads them, float32 (6,)."""
    latent_weight, cost_weight, cost_eps, value_eps = model.coef
    coef = (latent_weight, cost_weight, value_weight, smooth_weight, cost_eps, value_eps)
    return np.array(coef, np.float32)


def score(
    model: PackedModel, objective: Objective, z0: ArrayLike, goal: ArrayLike, actions: ArrayLike
) -> np.ndarray:
    """``objective``'s J of candidates (non-finite as +inf) on the packed model, one thread:
    z0 (B, D), goal (B, D), actions (B, N, H, A) (arrays or tensors) -> (B, N) float32."""
    z0, goal = np.ascontiguousarray(z0, np.float32), np.ascontiguousarray(goal, np.float32)
    actions = np.ascontiguousarray(actions, np.float32)
    cost = np.empty(actions.shape[:2], np.float32)
    score_candidates(
        tuple(model.net),
        model.layers,
        coefficients(model, objective.value_weight, objective.smooth_weight),
        model.has_value,
        z0,
        goal,
        goal_embeddings(model, goal),
        actions,
        actions.shape[1],
        np.ascontiguousarray(objective.step_weights, np.float32),
        cost,
    )
    return cost


# Only prange runs in parallel: array expressions stay plain loops. On one thread _decide skips
