"""The Numba CPU backend: the sampling planners' whole decision compiled, on exported MLP weights.

:func:`export_model` walks the world model's ``nn.Sequential`` layer lists (predictor net, cost
head, critic embedding) into flat NumPy arrays; one compiled kernel then runs a whole decision
of MPPI, CEM or iCEM (sampling, rollout, cost, elite refit). Candidates go through their H
predictor steps in blocks of :data:`BLOCK`, each layer one small register-blocked matrix product
over the block, and the blocks are spread over Numba's threads (as many as torch's:
``torch.set_num_threads``) by a ``prange``. Both backends consume the same
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
from numpy.typing import ArrayLike
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
# A Linear with at least this many inputs runs as dot products of each (out, in) weight row with
# 8 candidates; a narrower one as rows of its (in, out) weight added to 4 candidates. Each is the
# faster form on its side of the line (AVX2, per candidate: 64 -> 64 in 154 vs 240 ns, 64 -> 16
# in 40 vs 130 ns; 16 -> 64 in 56 vs 81 ns, 16 -> 128 in 78 vs 163 ns).
DOT_MIN_INPUTS = 32
MPPI_KIND, CEM_KIND, ICEM_KIND = 0, 1, 2
# Reassociation lets LLVM vectorise the reductions; no "nnan"/"ninf": a NaN cost must stay NaN.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
# With 2 threads, a default-budget MPPI decision took 32 ms on Numba's OpenMP layer (its default
# where TBB is missing) and 10 ms on the workqueue layer (benchmarks/planner_latency.py's model,
# 2-core machine at load 3). A layer the user chose (NUMBA_THREADING_LAYER) is kept.
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
    got = score(exported, objective, z0, goal, actions)
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
# Candidates are scored BLOCK at a time (a multiple of 8), each layer as one small matrix product
# over the block: every weight load then serves 4 or 8 candidates, where a matrix-vector product
# per candidate loads every weight once per candidate (2x faster on the default model).
BLOCK = 16


@njit(cache=True, fastmath=_FASTMATH)
def _four(x, k, width):
    """x[k : k + 4], as four scalars, with 0 past ``width``."""
    zero = np.float32(0.0)
    return (
        x[k],
        x[k + 1] if k + 1 < width else zero,
        x[k + 2] if k + 2 < width else zero,
        x[k + 3] if k + 3 < width else zero,
    )


@njit(cache=True, fastmath=_FASTMATH)
def _linear_rows(w, bias, x, y, width, out):
    """y[:, :out] = x[:, :width] @ w + bias for w (width, out): four rows of w at a time are
    added to four candidates, vectorised along the outputs (the fast form for narrow inputs),
    so each output is loaded and stored once per four rows."""
    last = width - 1
    for c in range(0, x.shape[0], 4):
        x0, x1, x2, x3 = x[c], x[c + 1], x[c + 2], x[c + 3]
        y0, y1, y2, y3 = y[c], y[c + 1], y[c + 2], y[c + 3]
        for j in range(out):
            y0[j] = y1[j] = y2[j] = y3[j] = bias[j]
        for k in range(0, width, 4):
            # a last group of fewer than four rows repeats the last row, times 0
            r0, r1, r2, r3 = w[k], w[min(k + 1, last)], w[min(k + 2, last)], w[min(k + 3, last)]
            a0, a1, a2, a3 = _four(x0, k, width)
            b0, b1, b2, b3 = _four(x1, k, width)
            c0, c1, c2, c3 = _four(x2, k, width)
            d0, d1, d2, d3 = _four(x3, k, width)
            for j in range(out):
                w0, w1, w2, w3 = r0[j], r1[j], r2[j], r3[j]
                y0[j] += a0 * w0 + a1 * w1 + a2 * w2 + a3 * w3
                y1[j] += b0 * w0 + b1 * w1 + b2 * w2 + b3 * w3
                y2[j] += c0 * w0 + c1 * w1 + c2 * w2 + c3 * w3
                y3[j] += d0 * w0 + d1 * w1 + d2 * w2 + d3 * w3


@njit(cache=True, fastmath=_FASTMATH)
def _linear_dots(w, bias, x, y, width, out):
    """y[:, :out] = x[:, :width] @ w.T + bias for w (out, width): one output's dot products
    with eight candidates at once (eight vector accumulators), so each weight load feeds 8."""
    for c in range(0, x.shape[0], 8):
        x0, x1, x2, x3 = x[c], x[c + 1], x[c + 2], x[c + 3]
        x4, x5, x6, x7 = x[c + 4], x[c + 5], x[c + 6], x[c + 7]
        for j in range(out):
            u = w[j]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
            for k in range(width):
                uk = u[k]
                s0 += uk * x0[k]
                s1 += uk * x1[k]
                s2 += uk * x2[k]
                s3 += uk * x3[k]
                s4 += uk * x4[k]
                s5 += uk * x5[k]
                s6 += uk * x6[k]
                s7 += uk * x7[k]
            b = bias[j]
            y[c, j], y[c + 1, j], y[c + 2, j], y[c + 3, j] = s0 + b, s1 + b, s2 + b, s3 + b
            y[c + 4, j], y[c + 5, j], y[c + 6, j], y[c + 7, j] = s4 + b, s5 + b, s6 + b, s7 + b


@njit(cache=True, fastmath=_FASTMATH)
def _layer_norm(x, gamma, beta, width, eps, floor):
    """LayerNorm of each row x[c, :width] in place, then max(., floor) (-inf: none; 0: ReLU);
    four rows at a time, so their reductions overlap."""
    scale = np.float32(1.0) / np.float32(width)
    for c in range(0, x.shape[0], 4):
        r0, r1, r2, r3 = x[c], x[c + 1], x[c + 2], x[c + 3]
        m0 = m1 = m2 = m3 = np.float32(0.0)
        for j in range(width):
            m0 += r0[j]
            m1 += r1[j]
            m2 += r2[j]
            m3 += r3[j]
        m0, m1, m2, m3 = m0 * scale, m1 * scale, m2 * scale, m3 * scale
        v0 = v1 = v2 = v3 = np.float32(0.0)
        for j in range(width):
            v0 += (r0[j] - m0) * (r0[j] - m0)
            v1 += (r1[j] - m1) * (r1[j] - m1)
            v2 += (r2[j] - m2) * (r2[j] - m2)
            v3 += (r3[j] - m3) * (r3[j] - m3)
        one = np.float32(1.0)
        v0, v1 = one / np.sqrt(v0 * scale + eps), one / np.sqrt(v1 * scale + eps)
        v2, v3 = one / np.sqrt(v2 * scale + eps), one / np.sqrt(v3 * scale + eps)
        for j in range(width):
            g, b = gamma[j], beta[j]
            r0[j] = max((r0[j] - m0) * v0 * g + b, floor)
            r1[j] = max((r1[j] - m1) * v1 * g + b, floor)
            r2[j] = max((r2[j] - m2) * v2 * g + b, floor)
            r3[j] = max((r3[j] - m3) * v3 * g + b, floor)


@njit(cache=True, fastmath=_FASTMATH)
def _mlp(net, first, end, buf, width):
    """Run layers [first, end) of ``net`` on a block of candidates buf[0, :, :width],
    ping-ponging between buf's halves (2, BLOCK, W); returns the half that holds the output
    (width: the last ``dims``)."""
    ops, dims, offsets, eps, params = net
    cur = 0
    for layer in range(first, end):
        op, out = ops[layer], dims[layer]
        start, stop = offsets[layer, 0], offsets[layer, 1]
        if op == LINEAR:
            w = params[start : start + width * out].reshape((width, out))
            _linear_rows(w, params[stop : stop + out], buf[cur], buf[1 - cur], width, out)
            cur, width = 1 - cur, out
        elif op == LINEAR_T:
            w = params[start : start + out * width].reshape((out, width))
            _linear_dots(w, params[stop : stop + out], buf[cur], buf[1 - cur], width, out)
            cur, width = 1 - cur, out
        elif op == RELU:
            x = buf[cur]
            for c in range(x.shape[0]):
                for j in range(width):
                    x[c, j] = max(x[c, j], np.float32(0.0))  # max(NaN, 0) stays NaN
        else:
            floor = np.float32(0.0 if op == LAYERNORM_RELU else -np.inf)
            gamma, beta = params[start : start + width], params[stop : stop + width]
            _layer_norm(buf[cur], gamma, beta, width, eps[layer], floor)
    return cur


@njit(cache=True, fastmath=_FASTMATH)
def _root_distance(x, emb, eps):
    """sqrt(||x - emb||^2 + eps) over emb's width: the task cost's and the critic's form."""
    total = np.float32(0.0)
    for j in range(emb.shape[0]):
        total += (x[j] - emb[j]) * (x[j] - emb[j])
    return np.sqrt(total + eps)


@njit(cache=True, fastmath=_FASTMATH)
def _score_block(first, count, net, layers, coef, has_value, z0, goal, embs, cand, step_w, cost):
    """cost[b, n] = J of the candidates i = b * count + n in [first, first + BLOCK) of cand
    (B, >= count, H, A), each the sequence cand[b, n] (H, A) from z0[b] to goal[b], or +inf if
    J is not finite; returns whether any was not. Past the last candidate, the block repeats it
    (computed, not stored).

    ``coef`` is (latent_weight, cost_weight, value_weight, smooth_weight); ``embs`` the goals'
    cost-head and critic embeddings, (B, E1) and (B, E2).
    """
    horizon, a_dim = cand.shape[2], cand.shape[3]
    last, d = cand.shape[0] * count - 1, z0.shape[1]
    rows = np.minimum(np.arange(first, first + BLOCK), last)
    bs, ns = rows // count, rows % count
    buf = np.empty((2, BLOCK, max(d + a_dim, np.max(net[1]))), np.float32)  # widest activation
    z = np.empty((BLOCK, d), np.float32)
    total = np.zeros(BLOCK, np.float32)
    x, cost_emb, value_emb = buf[0], embs[0], embs[1]
    for r in range(BLOCK):
        for j in range(d):  # element loops: a slice assignment costs more than 16 copies
            z[r, j] = z0[bs[r], j]
    for t in range(horizon):
        for r in range(BLOCK):
            for j in range(d):
                x[r, j] = z[r, j]
            for j in range(a_dim):
                x[r, d + j] = cand[bs[r], ns[r], t, j]
        out = _mlp(net, layers[PREDICTOR, 0], layers[PREDICTOR, 1], buf, d + a_dim)
        for r in range(BLOCK):
            zr, g, delta = z[r], goal[bs[r]], buf[out, r]
            distance = np.float32(0.0)
            for j in range(d):
                zr[j] += delta[j]
                distance += (zr[j] - g[j]) * (zr[j] - g[j])
                x[r, j] = zr[j]
            total[r] += step_w[t] * coef[0] * distance / np.float32(d)
        out = _mlp(net, layers[COST_HEAD, 0], layers[COST_HEAD, 1], buf, d)
        for r in range(BLOCK):
            task = _root_distance(buf[out, r], cost_emb[bs[r]], np.float32(COST_EPS))
            total[r] += step_w[t] * coef[1] * task
    if has_value and coef[2] > 0:
        for r in range(BLOCK):
            for j in range(d):
                x[r, j] = z[r, j]
        out = _mlp(net, layers[CRITIC, 0], layers[CRITIC, 1], buf, d)
        for r in range(BLOCK):
            value = _root_distance(buf[out, r], value_emb[bs[r]], np.float32(VALUE_EPS))
            total[r] += coef[2] * value
    bad = False
    for r in range(min(BLOCK, last + 1 - first)):
        actions = cand[bs[r], ns[r]]
        if coef[3] > 0:
            rough = np.float32(0.0)
            for t in range(1, horizon):
                for j in range(a_dim):
                    step = actions[t, j] - actions[t - 1, j]
                    rough += step * step
            total[r] += coef[3] * rough
        finite = np.isfinite(total[r])
        cost[bs[r], ns[r]] = total[r] if finite else np.inf
        bad |= not finite
    return bad


@njit(cache=True, fastmath=_FASTMATH)
def _score(net, layers, coef, has_value, z0, goal, embs, cand, step_w, cost):
    """cost = J of every candidate in cand (B, N, H, A), on one thread."""
    for first in range(0, cand.shape[0] * cand.shape[1], BLOCK):
        _score_block(
            first, cand.shape[1], net, layers, coef, has_value, z0, goal, embs, cand, step_w, cost
        )


@njit(cache=True)
def _run_rows(net, x, width):
    rows = (x.shape[0] + 7) // 8 * 8  # the kernels take rows in groups of 8; pad with zeros
    buf = np.zeros((2, rows, width), np.float32)
    buf[0, : x.shape[0], : x.shape[1]] = x
    cur = _mlp(net, 0, len(net[0]), buf, x.shape[1])
    return buf[cur, : x.shape[0], : net[1][-1]].copy()


def run_mlp(net: MLPWeights, x: ArrayLike) -> np.ndarray:
    """An exported MLP (:func:`export_mlp`) on the rows of x (M, I), compiled: one call for
    the whole network (a batch of one pays no per-layer Python) -> (M, O) float32."""
    x = np.ascontiguousarray(x, np.float32)
    return _run_rows(tuple(net), x, max(int(net.dims.max()), x.shape[1]))


def _forward(net: MLPWeights, first: int, end: int, x: np.ndarray) -> np.ndarray:
    """Layers [first, end) of ``net`` on the rows of x (M, D), in NumPy: the goals' embeddings,
    once per decision (compiled, they would add seconds to the first JIT compile)."""
    for layer in range(first, end):
        op, out, eps = net.ops[layer], net.dims[layer], net.eps[layer]
        start, stop = net.offsets[layer]
        if op == LINEAR or op == LINEAR_T:
            w = net.params[start : start + x.shape[1] * out]
            w = w.reshape(x.shape[1], out) if op == LINEAR else w.reshape(out, x.shape[1]).T
            x = x @ w + net.params[stop : stop + out]
        elif op != RELU:
            x = x - x.mean(1, keepdims=True)
            x = x / np.sqrt((x * x).mean(1, keepdims=True) + eps)
            x = x * net.params[start : start + out] + net.params[stop : stop + out]
        if op == RELU or op == LAYERNORM_RELU:
            x = np.maximum(x, np.float32(0.0))  # NaN stays NaN
    return x


def _goal_embeddings(model: ExportedModel, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cost head's and the critic's embeddings of each goal (B, D): (B, E1), (B, E2)."""
    embs = []
    for first, end in model.layers[[COST_HEAD, CRITIC]]:
        if end > first:
            embs.append(np.ascontiguousarray(_forward(model.net, first, end, goal), np.float32))
        else:
            embs.append(np.zeros((goal.shape[0], 0), np.float32))
    return embs[0], embs[1]


def _coefficients(model: ExportedModel, value_weight: float, smooth_weight: float) -> np.ndarray:
    return np.array(
        [model.latent_weight, model.cost_weight, value_weight, smooth_weight], np.float32
    )


def score(
    model: ExportedModel, objective: Objective, z0: ArrayLike, goal: ArrayLike, actions: ArrayLike
) -> np.ndarray:
    """``objective``'s J of candidates (non-finite as +inf) on the exported model, one thread:
    z0 (B, D), goal (B, D), actions (B, N, H, A) (arrays or tensors) -> (B, N) float32."""
    z0, goal = np.ascontiguousarray(z0, np.float32), np.ascontiguousarray(goal, np.float32)
    actions = np.ascontiguousarray(actions, np.float32)
    cost = np.empty(actions.shape[:2], np.float32)
    _score(
        tuple(model.net),
        model.layers,
        _coefficients(model, objective.value_weight, objective.smooth_weight),
        model.has_value,
        z0,
        goal,
        _goal_embeddings(model, goal),
        actions,
        np.ascontiguousarray(objective.step_weights, np.float32),
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
        blocks = (batch * total + BLOCK - 1) // BLOCK
        scored = np.zeros(blocks, np.bool_)
        for block in prange(blocks):
            # a prange body cannot capture tuples, so they are built inside; prange counts
            # in uint64, and the cast keeps one compiled _score_block
            net, embs = (ops, dims, offsets, eps, params), (cost_emb, value_emb)
            scored[block] = _score_block(
                np.int64(block) * BLOCK, total, net, layers, coef, has_value, z0, goal, embs,
                cand, step_w, cost,
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
