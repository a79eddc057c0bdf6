"""The Numba backend's scoring: a model's export packed for the kernels, the planners' objective
J of blocks of candidate action sequences (rollout, then the goal cost, value and smoothness,
or minus the predicted return), and the policy prior's sequences of a reward task."""

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
    """What the kernels need of a world model: its MLPs and the objective's coefficients.

    The layers of every network are concatenated into one :class:`MLPWeights`; ``layers``
    (Q + n, 2) holds each one's [first, end) layer, by row: PREDICTOR, COST_HEAD, CRITIC,
    REWARD, CONTINUATION, POLICY, then the n Q heads (an empty range: the model has none of
    it). ``coef`` is (latent_weight, cost_weight, cost_eps, value_eps, reward_scale,
    value_scale, log_std_min, log_std_max), the forms of
    :class:`~wmrobot.planners.dynamics.ModelExport`; ``points`` the two-hot bins of a reward
    task's scalars, empty for a regression one (or a goal task); ``bounds`` (2, A) the mid and
    half range of the actions; ``reward``: plan for the predicted return, discounted by
    ``gamma``.
    """

    net: MLPWeights
    layers: np.ndarray
    coef: np.ndarray
    has_value: bool
    points: np.ndarray
    bounds: np.ndarray
    reward: bool
    gamma: float


PREDICTOR, COST_HEAD, CRITIC, REWARD, CONTINUATION, POLICY, Q = range(7)
# Where the reward task's coefficients sit in the kernels' ``coef`` (:func:`coefficients`).
REWARD_SCALE, VALUE_SCALE, LOG_STD_MIN, LOG_STD_MAX = 6, 7, 8, 9


def _concat(nets: dict[int, MLPWeights], rows: int) -> tuple[MLPWeights, np.ndarray]:
    """One :class:`MLPWeights` holding ``nets`` in turn, and the [first, end) layer of each of
    ``rows`` rows (an empty range for a row without a net)."""
    layers, offsets, first, shift = np.zeros((rows, 2), np.int64), [], 0, 0
    for row, net in nets.items():
        layers[row] = first, first + len(net.ops)
        offsets.append(net.offsets + shift)
        first, shift = first + len(net.ops), shift + net.params.size
    parts = list(nets.values())
    merged = MLPWeights(
        np.concatenate([net.ops for net in parts]),
        np.concatenate([net.dims for net in parts]),
        np.concatenate(offsets),
        np.concatenate([net.eps for net in parts]),
        np.concatenate([net.params for net in parts]),
    )
    return merged, layers


def pack_model(dynamics: Dynamics, check: bool = True) -> PackedModel:
    """The kernels' copy of ``dynamics``, from its ``export()``
    (:class:`~wmrobot.planners.dynamics.ModelExport`).

    Raises :class:`ConfigError` for a model it cannot run (one without ``export()``, a GRU or
    transformer predictor, other layers), or one whose packed copy does not reproduce its
    torch objective (rollout, cost and value; or reward, continuation and state value) on a
    random probe (``check``; a re-read of a checked model's new weights may skip it).
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
    reward = getattr(exported, "task", "goal") == "reward"
    nets = {PREDICTOR: pack_mlp(exported.predictor, d + a, "predictor")}
    points, scalars, gamma = np.zeros(0, np.float32), (1.0, 1.0, 0.0, 0.0), 1.0
    if reward:
        nets[REWARD] = pack_mlp(exported.reward_head, d + a, "reward head")
        if exported.continuation is not None:
            nets[CONTINUATION] = pack_mlp(exported.continuation, d, "continuation head")
        nets[POLICY] = pack_mlp(exported.policy, d, "policy")
        for i, head in enumerate(exported.q_heads):
            nets[Q + i] = pack_mlp(head, d + a, "Q head")
        if exported.scalar_kind not in ("twohot", "regression"):
            raise ConfigError(
                f"the numba backend reads two-hot or regression scalars, not "
                f"{exported.scalar_kind!r}: use planner.backend=torch"
            )
        if exported.scalar_kind == "twohot":
            points = np.asarray(exported.points, np.float32)
        scalars = (exported.reward_scale, exported.value_scale)
        scalars += (exported.log_std_min, exported.log_std_max)
        gamma = float(exported.gamma)
    else:
        nets[COST_HEAD] = pack_mlp(exported.cost_head, d, "cost head")
        if has_value:
            nets[CRITIC] = pack_mlp(exported.critic, d, "critic")
    net, layers = _concat(nets, Q + (len(exported.q_heads) if reward else 0))
    coef = (exported.latent_weight, exported.cost_weight, exported.cost_eps, exported.value_eps)
    low = torch.as_tensor(dynamics.action_low, dtype=torch.float32).cpu()
    high = torch.as_tensor(dynamics.action_high, dtype=torch.float32).cpu()
    bounds = torch.stack([(high + low) / 2, (high - low) / 2]).numpy()  # as the model's
    packed = PackedModel(
        net, layers, np.array(coef + scalars, np.float32), has_value, points, bounds, reward, gamma
    )
    if check:
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
            f"(relative error {error:.2g}): its rollout, cost, value, reward or continuation is "
            f"not the plain MLP form; use planner.backend=torch"
        )


@njit(cache=True, fastmath=FASTMATH)
def score_block(
    first, count, net, layers, coef, has_value, z0, goal, embs, points, bounds, cand, step_w, cost
):  # fmt: skip
    """cost[b, n] = J of the candidates i = b * count + n in [first, first + BLOCK) of cand
    (B, >= count, H, A), each the sequence cand[b, n] (H, A) from z0[b], or +inf if J is not
    finite; returns whether any was not. Past the last candidate, the block repeats it
    (computed, not stored).

    A goal task's J (:func:`_goal_costs`) aims at goal[b]; a model with a reward head has
    J = -G, its predicted return (:func:`_negative_returns`). ``coef`` is
    (:func:`coefficients`) (latent_weight, cost_weight, value_weight, smooth_weight, cost_eps,
    value_eps, reward_scale, value_scale, log_std_min, log_std_max); ``step_w`` the goal
    cost's step weights (H,), or the discounts (H + 1,) of a reward task.
    """
    horizon, a_dim = cand.shape[2], cand.shape[3]
    last, d = cand.shape[0] * count - 1, z0.shape[1]
    rows = np.minimum(np.arange(first, first + BLOCK), last)
    bs, ns = rows // count, rows % count
    buf = np.empty((2, np.max(net[1]), BLOCK), np.float32)  # the widest layer's output
    # x: the block's state z (rows :d), then the step's action
    x = np.empty((d + a_dim, BLOCK), np.float32)
    for r in range(BLOCK):
        for j in range(d):
            x[j, r] = z0[bs[r], j]
    totals = np.empty(BLOCK, np.float32)
    if layers[REWARD, 1] > layers[REWARD, 0]:
        _negative_returns(net, layers, coef, points, bounds, bs, ns, cand, step_w, x, buf, totals)
    else:
        _goal_costs(net, layers, coef, has_value, goal, embs, bs, ns, cand, step_w, x, buf, totals)
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
def _goal_costs(net, layers, coef, has_value, goal, embs, bs, ns, cand, step_w, x, buf, totals):
    """totals = the goal task's J (before smoothness) of the block's candidates (bs, ns) from
    the states in x[:d]; ``embs`` the goals' cost-head and critic embeddings, (B, E1) and
    (B, E2)."""
    d, horizon, a_dim = goal.shape[1], cand.shape[2], cand.shape[3]
    g = np.empty((d, BLOCK), np.float32)
    cost_emb = np.empty((embs[0].shape[1], BLOCK), np.float32)
    value_emb = np.empty((embs[1].shape[1], BLOCK), np.float32)
    for r in range(BLOCK):
        b = bs[r]
        for j in range(d):
            g[j, r] = goal[b, j]
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
    store(totals, total)


@njit(cache=True, fastmath=FASTMATH)
def _negative_returns(net, layers, coef, points, bounds, bs, ns, cand, discount, x, buf, totals):
    """totals = -G of the block's candidates (bs, ns) from the states in x[:d]: G = sum_h
    discount[h] C_h r(z_h, a_h) + discount[H] C_H V(z_H), C_0 = 1, C_{h+1} = C_h c(z_{h+1}),
    V the mean of the Q heads at the policy's mode (the torch ``Objective.predicted_return``)."""
    horizon, a_dim = cand.shape[2], cand.shape[3]
    d = x.shape[0] - a_dim
    z = x[:d]
    ret = np.zeros(BLOCK, np.float32)
    alive = np.ones(BLOCK, np.float32)
    values = np.empty(BLOCK, np.float32)
    one = np.float32(1.0)
    cont_first, cont_end = layers[CONTINUATION, 0], layers[CONTINUATION, 1]
    for t in range(horizon):
        for r in range(BLOCK):
            for j in range(a_dim):
                x[d + j, r] = cand[bs[r], ns[r], t, j]
        out = mlp_block(net, layers[REWARD, 0], layers[REWARD, 1], x, buf)
        _scalar(out, points, coef[REWARD_SCALE], values)
        for r in range(BLOCK):
            ret[r] += discount[t] * alive[r] * values[r]
        delta = mlp_block(net, layers[PREDICTOR, 0], layers[PREDICTOR, 1], x, buf)
        for j in range(d):
            store(z[j], add(load(z[j]), load(delta[j])))
        if cont_end > cont_first:
            out = mlp_block(net, cont_first, cont_end, z, buf)
            for r in range(BLOCK):
                alive[r] *= one / (one + np.exp(-out[0, r]))  # sigmoid
    # V(z_H): the Q heads at the policy's mode mid + half * tanh(mean), written into x's action
    out = mlp_block(net, layers[POLICY, 0], layers[POLICY, 1], z, buf)
    for j in range(a_dim):
        for r in range(BLOCK):
            x[d + j, r] = bounds[0, j] + np.tanh(out[j, r]) * bounds[1, j]
    value = np.zeros(BLOCK, np.float32)
    for head in range(Q, layers.shape[0]):
        out = mlp_block(net, layers[head, 0], layers[head, 1], x, buf)
        _scalar(out, points, coef[VALUE_SCALE], values)
        for r in range(BLOCK):
            value[r] += values[r]
    heads = np.float32(layers.shape[0] - Q)
    for r in range(BLOCK):
        totals[r] = -(ret[r] + discount[horizon] * alive[r] * (value[r] / heads))


@njit(cache=True, fastmath=FASTMATH)
def _scalar(out, points, scale, values):
    """values = the scalar each lane's head outputs out (O, BLOCK) stand for: out[0] * scale
    without ``points`` (regression), else the two-hot symexp(sum(softmax(out) * points))."""
    bins = points.shape[0]
    if bins == 0:
        for r in range(BLOCK):
            values[r] = out[0, r] * scale
        return
    top = out[0].copy()
    for k in range(1, bins):
        for r in range(BLOCK):
            top[r] = max(top[r], out[k, r])
    total = np.zeros(BLOCK, np.float32)
    weighted = np.zeros(BLOCK, np.float32)
    for k in range(bins):
        for r in range(BLOCK):
            e = np.exp(out[k, r] - top[r])
            total[r] += e
            weighted[r] += e * points[k]
    for r in range(BLOCK):
        mean = weighted[r] / total[r]
        values[r] = np.sign(mean) * np.expm1(np.abs(mean))


@njit(cache=True, fastmath=FASTMATH)
def policy_rollout(net, layers, coef, bounds, z0, eps, prior):
    """prior[b, p] (H, A) = a sequence of the policy prior from z0[b]: each step a sample
    mid + half * tanh(mean + eps * exp(log_std)) of the policy at z (log_std squashed into
    [coef[LOG_STD_MIN], coef[LOG_STD_MAX]], :func:`coefficients`), then z' = z + predictor([z, a]);
    eps (B, P, H, A) standard normal."""
    batch, count, horizon, a_dim = eps.shape
    d, rows = z0.shape[1], batch * count
    low, span = coef[LOG_STD_MIN], np.float32(0.5) * (coef[LOG_STD_MAX] - coef[LOG_STD_MIN])
    buf = np.empty((2, np.max(net[1]), BLOCK), np.float32)
    x = np.empty((d + a_dim, BLOCK), np.float32)
    z = x[:d]
    for first in range(0, rows, BLOCK):
        idx = np.minimum(np.arange(first, first + BLOCK), rows - 1)
        bs, ps = idx // count, idx % count
        for r in range(BLOCK):
            for j in range(d):
                x[j, r] = z0[bs[r], j]
        for t in range(horizon):
            out = mlp_block(net, layers[POLICY, 0], layers[POLICY, 1], z, buf)
            for r in range(BLOCK):
                for j in range(a_dim):
                    log_std = low + span * (np.tanh(out[a_dim + j, r]) + np.float32(1.0))
                    pre = out[j, r] + eps[bs[r], ps[r], t, j] * np.exp(log_std)
                    x[d + j, r] = bounds[0, j] + np.tanh(pre) * bounds[1, j]
                    prior[bs[r], ps[r], t, j] = x[d + j, r]  # padding lanes rewrite the last row's
            delta = mlp_block(net, layers[PREDICTOR, 0], layers[PREDICTOR, 1], x, buf)
            for j in range(d):
                store(z[j], add(load(z[j]), load(delta[j])))


@njit(cache=True, fastmath=FASTMATH)
def score_candidates(
    net, layers, coef, has_value, z0, goal, embs, points, bounds, cand, count, step_w, cost
):  # fmt: skip
    """cost = J of the first ``count`` candidates of every row of cand (B, >= count, H, A),
    on this thread; returns whether any was not finite."""
    bad = False
    for first in range(0, cand.shape[0] * count, BLOCK):
        bad |= score_block(
            first, count, net, layers, coef, has_value, z0, goal, embs, points, bounds, cand,
            step_w, cost,
        )  # fmt: skip
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
    """The objective's coefficients as :func:`score_block` reads them, float32 (10,); a
    reward task's J has no value weight nor smoothness."""
    latent_weight, cost_weight, cost_eps, value_eps, *reward = model.coef
    if model.reward:
        value_weight = smooth_weight = 0.0
    coef = (latent_weight, cost_weight, value_weight, smooth_weight, cost_eps, value_eps, *reward)
    return np.array(coef, np.float32)


def step_weights(model: PackedModel, objective: Objective) -> np.ndarray:
    """J's per-step weights as :func:`score_block` reads them: the goal cost's (H,), or a
    reward task's discounts gamma^h (H + 1,), float32."""
    weights = np.ascontiguousarray(objective.step_weights, np.float32)
    if model.reward:
        return np.float32(model.gamma) ** np.arange(len(weights) + 1, dtype=np.float32)
    return weights


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
        model.points,
        model.bounds,
        actions,
        actions.shape[1],
        step_weights(model, objective),
        cost,
    )
    return cost
