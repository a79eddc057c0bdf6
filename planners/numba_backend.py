"""The Numba CPU backend: the sampling planners' whole decision compiled, on exported MLP weights.

:func:`export_model` walks the world model's ``nn.Sequential`` layer lists (predictor net, cost
head, critic embedding) into flat NumPy arrays; one compiled kernel then runs a whole decision
of MPPI, CEM or iCEM (sampling, rollout, cost, elite refit), each candidate's H predictor steps
fused into one pass of matrix-vector loops and the candidates spread over Numba's threads (as
many as torch's: ``torch.set_num_threads``) by a ``prange``. Both backends consume the same
:func:`~wmrobot.planners.noise.draw_noise` array and the same planner classes' bookkeeping, so
one seed gives one plan on both (up to float32 rounding). :func:`choose_backend` times both on
the model at hand and picks the faster (``backend=auto``). Compiled code is cached on disk by
Numba, so only the first process pays the JIT compile.
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import nn

from wmrobot.errors import ConfigError
from wmrobot.planners.base import Objective, Planner
from wmrobot.planners.cem import CEM
from wmrobot.planners.config import PlannerConfig, as_config
from wmrobot.planners.dynamics import Dynamics
from wmrobot.planners.icem import ICEM
from wmrobot.planners.mppi import MPPI
from wmrobot.planners.noise import draw_noise

log = logging.getLogger(__name__)

LINEAR, LINEAR_T, LAYERNORM, RELU, LAYERNORM_RELU = 0, 1, 2, 3, 4  # the last: LayerNorm, then ReLU
# A Linear with at least this many inputs runs as dot products, 8 outputs at a time, from its
# (out, in) weight; a narrower one as rows of (in, out) added in turn. Each is the faster
# form on its side of the line (measured on AVX2: 2x on 64 -> 64 and 64 -> 8, 2x the other
# way on 18 -> 64).
DOT_MIN_INPUTS = 32
MPPI_KIND, CEM_KIND, ICEM_KIND = 0, 1, 2
# Reassociation lets LLVM vectorise the reductions; no "nnan"/"ninf": a NaN cost must stay NaN.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
# With 2 threads, a default-budget MPPI decision took 32 ms on Numba's OpenMP layer (its default
# where TBB is missing) and 16 ms on the workqueue layer (benchmarks/planner_latency.py's model,
# 2-core machine). A layer the user chose (NUMBA_THREADING_LAYER) is kept.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"
# The exported model must reproduce the torch one within this (relative) on a random probe.
EXPORT_TOLERANCE = 1e-4


class MLPWeights(NamedTuple):
    """One ``nn.Sequential`` of Linear / LayerNorm / ReLU as flat arrays (layer l of L).

    ``ops`` (L,) layer kinds; ``dims`` (L,) output widths; ``offsets`` (L, 2) where the
    weight (LINEAR: (in, out), LINEAR_T: (out, in); LayerNorm: gamma) and the bias
    (LayerNorm: beta) start in ``params``; ``eps`` (L,) LayerNorm eps.
    """

    ops: np.ndarray
    dims: np.ndarray
    offsets: np.ndarray
    eps: np.ndarray
    params: np.ndarray


class ExportedModel(NamedTuple):
    """What the kernels need of a world model: its three MLPs and the cost's coefficients.

    The layers of the predictor, cost head and critic (empty without one) are concatenated
    into one :class:`MLPWeights`; ``layers`` (3, 2) holds each one's [first, end) layer.
    rollout: z' = z + predictor([z, a]); cost(z, g) = latent_weight * mean((z - g)^2) +
    cost_weight * sqrt(||cost_head(z) - cost_head(g)||^2 + 1e-8); value(z, g) =
    sqrt(||critic(z) - critic(g)||^2 + 1e-6) when ``has_value``.
    """

    net: MLPWeights
    layers: np.ndarray
    latent_weight: np.float32
    cost_weight: np.float32
    has_value: bool


PREDICTOR, COST_HEAD, CRITIC = 0, 1, 2
# The constants under the square roots of WorldModel.task_cost and Critic.forward.
COST_EPS, VALUE_EPS = 1e-8, 1e-6


def export_mlp(net: nn.Module, in_dim: int, what: str) -> MLPWeights:
    """Flatten ``net`` (an ``nn.Sequential`` of Linear, LayerNorm, ReLU) taking ``in_dim``."""
    if not isinstance(net, nn.Sequential):
        raise ConfigError(
            f"the numba backend runs nn.Sequential MLPs; the {what} is a {type(net).__name__}: "
            f"use planner.backend=torch"
        )
    ops, dims, offsets, eps, params = [], [], [], [], []
    size, width = 0, in_dim
    for layer in net:
        if isinstance(layer, nn.Linear):
            if layer.in_features != width:
                raise ConfigError(f"the {what}'s {layer} does not take width {width}")
            kind = LINEAR_T if width >= DOT_MIN_INPUTS else LINEAR
            weight = layer.weight.detach().cpu()
            weight = (weight if kind == LINEAR_T else weight.T).reshape(-1)
            bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
            width, blocks = layer.out_features, [weight, bias.detach().cpu()]
        elif isinstance(layer, nn.LayerNorm):
            if layer.normalized_shape != (width,):
                raise ConfigError(f"the {what}'s {layer} does not normalise width {width}")
            gamma = layer.weight if layer.weight is not None else torch.ones(width)
            beta = layer.bias if layer.bias is not None else torch.zeros(width)
            kind, blocks = LAYERNORM, [gamma.detach().cpu(), beta.detach().cpu()]
        elif isinstance(layer, nn.ReLU):
            if ops and ops[-1] == LAYERNORM:  # fused: one pass instead of two (1.7x faster)
                ops[-1] = LAYERNORM_RELU
                continue
            kind, blocks = RELU, []
        else:
            raise ConfigError(
                f"the numba backend runs Linear/LayerNorm/ReLU layers; the {what} has "
                f"{type(layer).__name__}: use planner.backend=torch"
            )
        ops.append(kind)
        dims.append(width)
        eps.append(getattr(layer, "eps", 0.0))
        starts = [size, size + (blocks[0].numel() if blocks else 0)]
        offsets.append(starts)
        params += [b.to(torch.float32).numpy().ravel() for b in blocks]
        size += sum(b.numel() for b in blocks)
    return MLPWeights(
        np.array(ops, np.int64),
        np.array(dims, np.int64),
        np.array(offsets, np.int64).reshape(-1, 2),
        np.array(eps, np.float32),
        np.concatenate(params).astype(np.float32) if params else np.zeros(1, np.float32),
    )


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


def export_model(model: Dynamics) -> ExportedModel:
    """The kernels' copy of an MLP world model (:class:`wmrobot.model.world_model.WorldModel`).

    Raises :class:`ConfigError` for a model it cannot run (a GRU or transformer predictor,
    another Dynamics, other layers), or one whose exported copy does not reproduce its torch
    rollout, cost and value on a random probe.
    """
    cfg = getattr(model, "cfg", None)
    needed = ("predictor", "cost_head", "latent_dim", "action_dim")
    if cfg is None or not all(hasattr(model, name) for name in needed):
        raise ConfigError(
            f"the numba backend exports WorldModel MLPs; {type(model).__name__} is not one: "
            f"use planner.backend=torch"
        )
    kind = getattr(cfg, "predictor", "mlp")
    if kind != "mlp":
        raise ConfigError(
            f"the numba backend runs MLP predictors; this model's is model.predictor={kind}: "
            f"use planner.backend=torch"
        )
    d, a = model.latent_dim, model.action_dim
    has_value = bool(getattr(model, "has_value", False))
    nets = [
        export_mlp(model.predictor.net, d + a, "predictor"),
        export_mlp(model.cost_head, d, "cost head"),
    ]
    if has_value:
        nets.append(export_mlp(model.critic.phi, d, "critic"))
    net, layers = _concat(nets)
    if not has_value:  # an empty layer range stands for the missing critic
        layers = np.concatenate([layers, [[len(net.ops), len(net.ops)]]])
    exported = ExportedModel(
        net,
        layers,
        np.float32(cfg.latent_weight),
        np.float32(cfg.cost_weight),
        has_value,
    )
    _check_export(model, exported)
    return exported


def _check_export(model, exported: ExportedModel) -> None:
    """Score random candidates with every objective term on both ways; refuse a mismatch."""
    gen = torch.Generator().manual_seed(0)
    d, a, h = model.latent_dim, model.action_dim, 3
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
    got = score(
        exported,
        z0.numpy(),
        goal.numpy(),
        actions.numpy(),
        objective.step_weights.numpy(),
        objective.value_weight,
        objective.smooth_weight,
    )
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


# ----------------------------------------------------------------------------------- kernels
@njit(cache=True, fastmath=_FASTMATH)
def _mlp(net, first, end, buf, width):
    """Run layers [first, end) of ``net`` on buf[0, :width] in place, ping-ponging between
    buf's two rows (2, W); returns the row that holds the output (width: the last ``dims``)."""
    ops, dims, offsets, eps, params = net
    cur = 0
    for layer in range(first, end):
        x = buf[cur]
        start, stop = offsets[layer, 0], offsets[layer, 1]
        if ops[layer] == LINEAR:
            # Slices (not offset arithmetic) let LLVM vectorise the inner loop.
            out = dims[layer]
            y = buf[1 - cur]
            bias = params[stop : stop + out]
            for j in range(out):
                y[j] = bias[j]
            for k in range(width):
                xk = x[k]
                row = params[start + k * out : start + (k + 1) * out]
                for j in range(out):
                    y[j] += xk * row[j]
            cur, width = 1 - cur, out
        elif ops[layer] == LINEAR_T:
            out = dims[layer]
            y = buf[1 - cur]
            w = params[start : start + out * width].reshape((out, width))
            bias = params[stop : stop + out]
            j = 0
            while j + 8 <= out:  # 8 dot products at once share each load of x
                w0, w1, w2, w3 = w[j], w[j + 1], w[j + 2], w[j + 3]
                w4, w5, w6, w7 = w[j + 4], w[j + 5], w[j + 6], w[j + 7]
                s0, s1, s2, s3 = bias[j], bias[j + 1], bias[j + 2], bias[j + 3]
                s4, s5, s6, s7 = bias[j + 4], bias[j + 5], bias[j + 6], bias[j + 7]
                for k in range(width):
                    xk = x[k]
                    s0 += w0[k] * xk
                    s1 += w1[k] * xk
                    s2 += w2[k] * xk
                    s3 += w3[k] * xk
                    s4 += w4[k] * xk
                    s5 += w5[k] * xk
                    s6 += w6[k] * xk
                    s7 += w7[k] * xk
                y[j], y[j + 1], y[j + 2], y[j + 3] = s0, s1, s2, s3
                y[j + 4], y[j + 5], y[j + 6], y[j + 7] = s4, s5, s6, s7
                j += 8
            for rest in range(j, out):
                total = bias[rest]
                for k in range(width):
                    total += w[rest, k] * x[k]
                y[rest] = total
            cur, width = 1 - cur, out
        elif ops[layer] == LAYERNORM or ops[layer] == LAYERNORM_RELU:
            total = np.float32(0.0)
            for j in range(width):
                total += x[j]
            mu = total / np.float32(width)
            var = np.float32(0.0)
            for j in range(width):
                var += (x[j] - mu) * (x[j] - mu)
            inv = np.float32(1.0) / np.sqrt(var / np.float32(width) + eps[layer])
            gamma = params[start : start + width]
            beta = params[stop : stop + width]
            floor = np.float32(0.0 if ops[layer] == LAYERNORM_RELU else -np.inf)
            for j in range(width):
                x[j] = max((x[j] - mu) * inv * gamma[j] + beta[j], floor)
        else:
            for j in range(width):
                x[j] = max(x[j], np.float32(0.0))
    return cur


@njit(cache=True, fastmath=_FASTMATH)
def _root_distance(x, emb, eps):
    """sqrt(||x - emb||^2 + eps) over emb's width: the task cost's and the critic's form."""
    total = np.float32(0.0)
    for j in range(emb.shape[0]):
        total += (x[j] - emb[j]) * (x[j] - emb[j])
    return np.sqrt(total + eps)


@njit(cache=True, fastmath=_FASTMATH)
def _sequence_cost(i, count, net, layers, coef, has_value, z0, goal, embs, cand, step_w, cost):
    """cost[b, n] = J of candidate i = b * count + n, the sequence cand[b, n] (H, A) from
    z0[b] to goal[b], or +inf if J is not finite; returns whether it was not.

    ``coef`` is (latent_weight, cost_weight, value_weight, smooth_weight); ``embs`` the goals'
    cost-head and critic embeddings, (B, E1) and (B, E2).
    """
    b, n = i // count, i % count
    z, actions = z0[b].copy(), cand[b, n]
    cost_emb, value_emb = embs[0][b], embs[1][b]
    d, horizon, a_dim = z.shape[0], actions.shape[0], actions.shape[1]
    buf = np.empty((2, max(d + a_dim, np.max(net[1]))), np.float32)  # the widest activation
    total = np.float32(0.0)
    for t in range(horizon):
        buf[0, :d] = z
        buf[0, d : d + a_dim] = actions[t]
        out = _mlp(net, layers[PREDICTOR, 0], layers[PREDICTOR, 1], buf, d + a_dim)
        distance = np.float32(0.0)
        for j in range(d):
            z[j] += buf[out, j]
            distance += (z[j] - goal[b, j]) * (z[j] - goal[b, j])
        buf[0, :d] = z
        out = _mlp(net, layers[COST_HEAD, 0], layers[COST_HEAD, 1], buf, d)
        task = _root_distance(buf[out], cost_emb, np.float32(COST_EPS))
        total += step_w[t] * (coef[0] * distance / np.float32(d) + coef[1] * task)
    if has_value and coef[2] > 0:
        buf[0, :d] = z
        out = _mlp(net, layers[CRITIC, 0], layers[CRITIC, 1], buf, d)
        total += coef[2] * _root_distance(buf[out], value_emb, np.float32(VALUE_EPS))
    if coef[3] > 0:
        rough = np.float32(0.0)
        for t in range(1, horizon):
            for j in range(a_dim):
                rough += (actions[t, j] - actions[t - 1, j]) * (actions[t, j] - actions[t - 1, j])
        total += coef[3] * rough
    finite = np.isfinite(total)
    cost[b, n] = total if finite else np.inf
    return not finite


@njit(cache=True, fastmath=_FASTMATH)
def _score(net, layers, coef, has_value, z0, goal, embs, cand, step_w, cost):
    """cost = J of every candidate in cand (B, N, H, A), on one thread."""
    for i in range(cand.shape[0] * cand.shape[1]):
        _sequence_cost(
            i, cand.shape[1], net, layers, coef, has_value, z0, goal, embs, cand, step_w, cost
        )


def _goal_embeddings(model: ExportedModel, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cost head's and the critic's embeddings of each goal (B, D): (B, E1), (B, E2)."""
    net, layers = tuple(model.net), model.layers
    buf = np.empty((2, max(goal.shape[1], model.net.dims.max())), np.float32)
    embs = []
    for first, end in layers[[COST_HEAD, CRITIC]]:
        emb = np.zeros((goal.shape[0], model.net.dims[end - 1] if end > first else 0), np.float32)
        for b in range(goal.shape[0] if end > first else 0):
            buf[0, : goal.shape[1]] = goal[b]
            emb[b] = buf[_mlp(net, first, end, buf, goal.shape[1]), : emb.shape[1]]
        embs.append(emb)
    return embs[0], embs[1]


def _coefficients(model: ExportedModel, value_weight: float, smooth_weight: float) -> np.ndarray:
    return np.array(
        [model.latent_weight, model.cost_weight, value_weight, smooth_weight], np.float32
    )


def score(
    model: ExportedModel,
    z0: np.ndarray,
    goal: np.ndarray,
    actions: np.ndarray,
    step_weights: np.ndarray,
    value_weight: float,
    smooth_weight: float,
) -> np.ndarray:
    """J of candidates (the torch :class:`~wmrobot.planners.base.Objective`, non-finite as
    +inf), on one thread: z0 (B, D), goal (B, D), actions (B, N, H, A) -> (B, N) float32."""
    z0, goal = np.ascontiguousarray(z0, np.float32), np.ascontiguousarray(goal, np.float32)
    actions = np.ascontiguousarray(actions, np.float32)
    cost = np.empty(actions.shape[:2], np.float32)
    _score(
        tuple(model.net),
        model.layers,
        _coefficients(model, value_weight, smooth_weight),
        model.has_value,
        z0,
        goal,
        _goal_embeddings(model, goal),
        actions,
        np.ascontiguousarray(step_weights, np.float32),
        cost,
    )
    return cost


# Only prange runs in parallel: array expressions stay plain loops. On one thread the pool runs
# it as fast as a serial compile (measured within 2%), so one variant serves every thread count.
_PRANGE_ONLY = {
    **dict.fromkeys(
        ("comprehension", "reduction", "inplace_binop", "setitem", "numpy", "stencil", "fusion"),
        False,
    ),
    "prange": True,
}


@njit(cache=True, fastmath=_FASTMATH, parallel=_PRANGE_ONLY)
def _decide(
    ops, dims, offsets, eps, params, layers, coef, has_value, z0, goal, cost_emb,
    value_emb, mean, noise, sizes, carried, n_carried, low, high, kind, elites, n_keep,
    init_std, min_std, max_std, temperature, alpha, step_w,
):  # fmt: skip
    """One decision of MPPI / CEM / iCEM (``kind``) for B problems; mirrors
    :meth:`wmrobot.planners.sampling.SamplingPlanner.plan` and the planners' hooks.

    mean (B, H, A) the clipped initial mean; noise (I, B, N, H, A); sizes (I,) the samples
    of each iteration; carried (B, C, H, A) of which the first ``n_carried`` join every
    iteration's candidates (iCEM's elites from the last decision, then from the last
    iteration). Returns (plan (B, H, A), the last iteration's ``n_keep`` best elites, whether
    any cost was non-finite).
    """
    batch, horizon, a_dim = mean.shape
    one = np.float32(1.0)
    mean, std = mean.copy(), np.full(mean.shape, init_std, np.float32)
    best, best_cost = mean.copy(), np.full(batch, np.inf, np.float32)
    pool = noise.shape[2] + max(carried.shape[1], n_keep)
    cand = np.empty((batch, pool, horizon, a_dim), np.float32)
    cost = np.empty((batch, pool), np.float32)
    keep = np.empty((batch, n_keep, horizon, a_dim), np.float32)
    carry = np.empty((batch, max(carried.shape[1], n_keep), horizon, a_dim), np.float32)
    carry[:, : carried.shape[1]] = carried
    bad = False
    for it in range(sizes.shape[0]):
        n = sizes[it]
        for i in range(batch * n):
            b, s = i // n, i % n
            for t in range(horizon):
                for j in range(a_dim):
                    x = mean[b, t, j]
                    if s > 0:  # candidate 0 is the mean itself (the incumbent)
                        x += std[b, t, j] * noise[it, b, s, t, j]
                    cand[b, s, t, j] = min(max(x, low[j]), high[j])
        total = n + n_carried
        cand[:, n:total] = carry[:, :n_carried]
        scored = np.zeros(batch * total, np.bool_)
        for i in prange(batch * total):
            # a prange body cannot capture tuples, so they are built inside; prange counts
            # in uint64, and the cast keeps one compiled _sequence_cost
            net, embs = (ops, dims, offsets, eps, params), (cost_emb, value_emb)
            scored[i] = _sequence_cost(
                np.int64(i), total, net, layers, coef, has_value, z0, goal, embs, cand,
                step_w, cost,
            )  # fmt: skip
        bad |= scored.any()
        for b in range(batch):
            order = np.argsort(cost[b, :total], kind="mergesort")[:elites]  # stable, as torch
            ec = cost[b, order]
            el = cand[b, order]
            if kind == ICEM_KIND:
                if ec[0] < best_cost[b]:
                    best[b], best_cost[b] = el[0], ec[0]
                keep[b] = el[:n_keep]
            if not np.isfinite(ec[0]):
                continue  # no finite candidate: this row keeps its mean and std
            w = np.zeros(elites, np.float32)
            for k in range(elites):
                if kind == MPPI_KIND:
                    w[k] = np.exp(-(ec[k] - ec[0]) / temperature)
                elif np.isfinite(ec[k]):
                    w[k] = one
            w /= w.sum()
            for t in range(horizon):
                for j in range(a_dim):
                    m = np.float32(0.0)
                    for k in range(elites):
                        m += w[k] * el[k, t, j]
                    v = np.float32(0.0)
                    for k in range(elites):
                        v += w[k] * (el[k, t, j] - m) * (el[k, t, j] - m)
                    sd = np.sqrt(v)
                    if kind != MPPI_KIND:
                        m = alpha * mean[b, t, j] + (one - alpha) * m
                        sd = alpha * std[b, t, j] + (one - alpha) * sd
                    mean[b, t, j] = m
                    std[b, t, j] = min(max(sd, min_std), max_std)
        if kind == ICEM_KIND and n_keep > 0:
            carry[:, :n_keep] = keep
            n_carried = n_keep
    plan = best if kind == ICEM_KIND else mean
    for b in range(batch):
        for t in range(horizon):
            for j in range(a_dim):
                plan[b, t, j] = min(max(plan[b, t, j], low[j]), high[j])
    return plan, keep, bad


# ---------------------------------------------------------------------------------- planners
class _NumbaSampling:
    """``plan`` of a sampling planner in one call of the compiled decision kernel; the rest
    (config, rng, warm start, iCEM's memory across decisions) is the torch class's, so both
    backends agree. Runs on torch's thread count (``torch.set_num_threads``)."""

    kind: int

    def __init__(self, dynamics: Dynamics, cfg: PlannerConfig, seed: int = 0) -> None:
        super().__init__(dynamics, cfg, seed)
        self.exported = export_model(dynamics)
        objective = self.objective
        self.step_weights = objective.step_weights.numpy().astype(np.float32)
        self.coef = _coefficients(self.exported, objective.value_weight, objective.smooth_weight)
        self._low = self.low.numpy().astype(np.float32)
        self._high = self.high.numpy().astype(np.float32)

    def plan(
        self, z0: torch.Tensor, goal_z: torch.Tensor, init_mean: torch.Tensor | None = None
    ) -> torch.Tensor:
        cfg = self.cfg
        batch, a_dim = z0.shape[0], self._low.shape[0]
        mean = self.initial_mean(batch, init_mean)
        sizes = self.populations()
        noise = draw_noise(self.rng, len(sizes), batch, max(sizes), cfg.horizon, a_dim, cfg.beta)
        n_keep = getattr(self, "n_keep", 0)
        memory = getattr(self, "memory", None)
        reuse = init_mean is not None and memory is not None and memory.shape[0] == batch
        carried = memory.numpy() if reuse and n_keep else np.zeros((batch, 0, cfg.horizon, a_dim))
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        model, goal = self.exported, _as_f32(goal_z)
        plan, keep, bad = _decide(
            *model.net,
            model.layers,
            self.coef,
            model.has_value,
            _as_f32(z0),
            goal,
            *_goal_embeddings(model, goal),
            _as_f32(mean),
            noise,
            np.asarray(sizes, np.int64),
            np.ascontiguousarray(carried, np.float32),
            carried.shape[1],
            self._low,
            self._high,
            self.kind,
            cfg.elites,
            n_keep,
            np.float32(cfg.init_std),
            np.float32(cfg.min_std),
            np.float32(cfg.max_std),
            np.float32(cfg.temperature),
            np.float32(cfg.alpha),
            self.step_weights,
        )
        if bad:  # the base class's once-per-planner warning
            self.finite_costs(torch.tensor([torch.nan]))
        if self.kind == ICEM_KIND:
            self.memory = torch.from_numpy(keep) if n_keep else None
        return torch.from_numpy(plan)


def _as_f32(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)


class NumbaMPPI(_NumbaSampling, MPPI):
    """:class:`~wmrobot.planners.mppi.MPPI` on the Numba backend."""

    kind = MPPI_KIND


class NumbaCEM(_NumbaSampling, CEM):
    """:class:`~wmrobot.planners.cem.CEM` on the Numba backend."""

    kind = CEM_KIND


class NumbaICEM(_NumbaSampling, ICEM):
    """:class:`~wmrobot.planners.icem.ICEM` on the Numba backend."""

    kind = ICEM_KIND


NUMBA_PLANNERS: dict[str, type[Planner]] = {
    "mppi": NumbaMPPI,
    "cem": NumbaCEM,
    "icem": NumbaICEM,
}


def make_numba_planner(dynamics: Dynamics, cfg: PlannerConfig, seed: int = 0) -> Planner:
    """The planner ``cfg.name`` on the Numba backend; :class:`ConfigError` if it cannot run
    there (the gradient planner, a model that is not an exportable MLP world model)."""
    cfg = as_config(cfg)
    if cfg.name not in NUMBA_PLANNERS:
        raise ConfigError(
            f"planner.name={cfg.name} has no numba backend (it needs gradients through the "
            f"model): use planner.backend=torch"
        )
    return NUMBA_PLANNERS[cfg.name](dynamics, cfg, seed)


def choose_backend(dynamics: Dynamics, cfg: PlannerConfig, seed: int = 0, batch: int = 1) -> str:
    """``backend=auto``: "numba" if the Numba planner decides faster than the torch one on
    this model (``batch`` problems at once, the current torch thread count), else "torch".

    Torch is kept without measuring for the gradient planner, a model on an accelerator or
    one the Numba backend cannot export. The JIT compile (paid once; later processes load
    it from Numba's cache) and both decision times are logged.
    """
    from wmrobot.planners import TORCH_PLANNERS

    cfg = as_config(cfg)
    params = list(dynamics.parameters()) if isinstance(dynamics, nn.Module) else []
    if cfg.name not in NUMBA_PLANNERS or any(p.device.type != "cpu" for p in params):
        return "torch"
    try:
        start = time.perf_counter()
        fast = make_numba_planner(dynamics, cfg, seed)
        compile_s = time.perf_counter() - start
    except ConfigError as err:
        log.info("backend=auto: torch (%s)", err)
        return "torch"
    slow = TORCH_PLANNERS[cfg.name](dynamics, cfg, seed)
    gen = torch.Generator().manual_seed(seed)
    z0 = torch.randn(batch, dynamics.latent_dim, generator=gen)
    goal = torch.randn(batch, dynamics.latent_dim, generator=gen)
    start = time.perf_counter()
    fast.plan(z0, goal)  # the first call compiles (or loads the cache)
    compile_s += time.perf_counter() - start
    slow.plan(z0, goal)
    times: dict[str, list[float]] = {"numba": [], "torch": []}
    for _ in range(3):  # interleaved, so a busy machine slows both alike
        for name, planner in (("numba", fast), ("torch", slow)):
            start = time.perf_counter()
            planner.plan(z0, goal)
            times[name].append(time.perf_counter() - start)
    best = {name: float(np.median(t)) for name, t in times.items()}
    choice = "numba" if best["numba"] < best["torch"] else "torch"
    log.info(
        "backend=auto: %s (decision: numba %.1f ms, torch %.1f ms; numba setup and JIT %.1f s)",
        choice,
        1e3 * best["numba"],
        1e3 * best["torch"],
        compile_s,
    )
    return choice
