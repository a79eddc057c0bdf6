"""The Numba CPU backend: the sampling planners' whole decision compiled, on exported MLP weights.

:func:`export_model` walks the world model's ``nn.Sequential`` layer lists (predictor net, cost
head, critic embedding) into flat NumPy arrays; one compiled kernel then runs a whole decision
of MPPI, CEM or iCEM (sampling, rollout, cost, elite refit). Candidates go through their H
predictor steps in blocks of :data:`BLOCK`, one candidate per SIMD lane, each Linear an
outer-product micro-kernel over the block, and the blocks are spread over Numba's threads (as
many as torch's: ``torch.set_num_threads``) by a ``prange``, or run in the calling thread on
one. Both backends consume the same
:func:`~wmrobot.planners.noise.draw_noise` array and the same planner classes' bookkeeping, so
one seed gives one plan on both (up to float32 rounding). :func:`choose_backend` times both on
the model at hand and picks the faster (``backend=auto``). Compiled code is cached on disk by
Numba, so only the first process pays the JIT compile.
"""

from __future__ import annotations

import logging
import os
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

LINEAR, LAYERNORM, RELU, LAYERNORM_RELU = 0, 1, 2, 3  # the last: LayerNorm, then ReLU
MPPI_KIND, CEM_KIND, ICEM_KIND = 0, 1, 2
# Reassociation lets LLVM vectorise the reductions; no "nnan"/"ninf": a NaN cost must stay NaN.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
# With 2 threads, a default-budget MPPI decision took 32 ms on Numba's OpenMP layer (its default
# where TBB is missing) and 10 ms on the workqueue layer (benchmarks/planner_latency.py's model,
# 2-core machine at load 3). A layer the user chose (NUMBA_THREADING_LAYER) is kept.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"
# LLVM's SLP vectoriser, off in Numba by default, is what packs the lane kernels' tuples into
# vector registers (without it they run many times slower). Numba reads the flag when it
# builds a function, and its disk cache does not key on it, so it is on before any kernel of
# this module can compile; a setting the user chose (NUMBA_SLP_VECTORIZE) is kept.
if "NUMBA_SLP_VECTORIZE" not in os.environ:
    numba.config.SLP_VECTORIZE = 1
# The exported model must reproduce the torch one within this (relative) on a random probe.
EXPORT_TOLERANCE = 1e-4


class MLPWeights(NamedTuple):
    """One ``nn.Sequential`` of Linear / LayerNorm / ReLU as flat arrays (layer l of L).

    ``ops`` (L,) layer kinds; ``dims`` (L,) output widths; ``offsets`` (L, 2) where the
    weight (LINEAR: (in, out); LayerNorm: gamma) and the bias
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
            kind, weight = LINEAR, layer.weight.detach().cpu().T.reshape(-1)  # (in, out)
            bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
            width, blocks = layer.out_features, [weight, bias.detach().cpu()]
        elif isinstance(layer, nn.LayerNorm):
            if layer.normalized_shape != (width,):
                raise ConfigError(f"the {what}'s {layer} does not normalise width {width}")
            gamma = layer.weight if layer.weight is not None else torch.ones(width)
            beta = layer.bias if layer.bias is not None else torch.zeros(width)
            kind, blocks = LAYERNORM, [gamma.detach().cpu(), beta.detach().cpu()]
        elif isinstance(layer, nn.ReLU):
            if ops and ops[-1] == LAYERNORM:  # fused: one pass instead of two
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
# Candidates are scored BLOCK at a time, each activation held feature-major, (width, BLOCK): a
# row holds one feature of the block's 16 candidates, two AVX2 vectors. Every layer is then
# lane-wise over the candidates: a Linear is a sum of outer products (one weight times one input
# row, added to an output row), LayerNorm's reductions are row additions, and no step ever mixes
# two candidates' lanes (a NaN candidate leaves its block mates alone).
BLOCK = 16  # the lane helpers (_splat, _load, _fma, ...) are written out for 16
# The lane kernels below hold a row of the block as a tuple of 16 float32 (SSA values, not
# memory); LLVM's SLP vectoriser (switched on at import, above) packs each tuple into two ymm
# registers. No "reassoc" there: it would let the loop vectoriser turn each lane's sum over k
# into a reduction of its own (64 spilled accumulators, many times slower), and a lane's sum
# then runs in one fixed order, so a candidate scores the same in any lane.
_LANES = {"contract", "nsz", "arcp"}


@njit(cache=True, fastmath=_LANES)
def _splat(v):
    """(v,) * 16."""
    return (v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v)


@njit(cache=True, fastmath=_LANES)
def _load(x):
    """x[:16] as a tuple."""
    return (
        x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7],
        x[8], x[9], x[10], x[11], x[12], x[13], x[14], x[15],
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES)
def _store(y, a):
    """y[:16] = a."""
    y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7] = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
    y[8], y[9], y[10], y[11] = a[8], a[9], a[10], a[11]
    y[12], y[13], y[14], y[15] = a[12], a[13], a[14], a[15]


@njit(cache=True, fastmath=_LANES)
def _fma(a, w, x):
    """a + w * x, lane-wise (w a scalar)."""
    return (
        a[0] + w * x[0], a[1] + w * x[1], a[2] + w * x[2], a[3] + w * x[3],
        a[4] + w * x[4], a[5] + w * x[5], a[6] + w * x[6], a[7] + w * x[7],
        a[8] + w * x[8], a[9] + w * x[9], a[10] + w * x[10], a[11] + w * x[11],
        a[12] + w * x[12], a[13] + w * x[13], a[14] + w * x[14], a[15] + w * x[15],
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES)
def _add(a, x):
    """a + x, lane-wise."""
    return (
        a[0] + x[0], a[1] + x[1], a[2] + x[2], a[3] + x[3],
        a[4] + x[4], a[5] + x[5], a[6] + x[6], a[7] + x[7],
        a[8] + x[8], a[9] + x[9], a[10] + x[10], a[11] + x[11],
        a[12] + x[12], a[13] + x[13], a[14] + x[14], a[15] + x[15],
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES)
def _add_squared_difference(a, x, m):
    """a + (x - m)^2, lane-wise."""
    return (
        a[0] + (x[0] - m[0]) * (x[0] - m[0]), a[1] + (x[1] - m[1]) * (x[1] - m[1]),
        a[2] + (x[2] - m[2]) * (x[2] - m[2]), a[3] + (x[3] - m[3]) * (x[3] - m[3]),
        a[4] + (x[4] - m[4]) * (x[4] - m[4]), a[5] + (x[5] - m[5]) * (x[5] - m[5]),
        a[6] + (x[6] - m[6]) * (x[6] - m[6]), a[7] + (x[7] - m[7]) * (x[7] - m[7]),
        a[8] + (x[8] - m[8]) * (x[8] - m[8]), a[9] + (x[9] - m[9]) * (x[9] - m[9]),
        a[10] + (x[10] - m[10]) * (x[10] - m[10]), a[11] + (x[11] - m[11]) * (x[11] - m[11]),
        a[12] + (x[12] - m[12]) * (x[12] - m[12]), a[13] + (x[13] - m[13]) * (x[13] - m[13]),
        a[14] + (x[14] - m[14]) * (x[14] - m[14]), a[15] + (x[15] - m[15]) * (x[15] - m[15]),
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES)
def _scale(a, f):
    """a * f, lane-wise (f a scalar)."""
    return (
        a[0] * f, a[1] * f, a[2] * f, a[3] * f, a[4] * f, a[5] * f, a[6] * f, a[7] * f,
        a[8] * f, a[9] * f, a[10] * f, a[11] * f, a[12] * f, a[13] * f, a[14] * f, a[15] * f,
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES, error_model="numpy")  # 1 / 0: inf, no check
def _inverse_root(a, f, eps):
    """1 / sqrt(a * f + eps), lane-wise: LayerNorm's 1 / std from the summed squares."""
    one = np.float32(1.0)
    return (
        one / np.sqrt(a[0] * f + eps), one / np.sqrt(a[1] * f + eps),
        one / np.sqrt(a[2] * f + eps), one / np.sqrt(a[3] * f + eps),
        one / np.sqrt(a[4] * f + eps), one / np.sqrt(a[5] * f + eps),
        one / np.sqrt(a[6] * f + eps), one / np.sqrt(a[7] * f + eps),
        one / np.sqrt(a[8] * f + eps), one / np.sqrt(a[9] * f + eps),
        one / np.sqrt(a[10] * f + eps), one / np.sqrt(a[11] * f + eps),
        one / np.sqrt(a[12] * f + eps), one / np.sqrt(a[13] * f + eps),
        one / np.sqrt(a[14] * f + eps), one / np.sqrt(a[15] * f + eps),
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES)
def _root(a, eps):
    """sqrt(a + eps), lane-wise."""
    return (
        np.sqrt(a[0] + eps), np.sqrt(a[1] + eps), np.sqrt(a[2] + eps), np.sqrt(a[3] + eps),
        np.sqrt(a[4] + eps), np.sqrt(a[5] + eps), np.sqrt(a[6] + eps), np.sqrt(a[7] + eps),
        np.sqrt(a[8] + eps), np.sqrt(a[9] + eps), np.sqrt(a[10] + eps), np.sqrt(a[11] + eps),
        np.sqrt(a[12] + eps), np.sqrt(a[13] + eps), np.sqrt(a[14] + eps), np.sqrt(a[15] + eps),
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES)
def _normalise(x, m, r, g, b, floor):
    """max((x - m) * r * g + b, floor), lane-wise (g, b, floor scalars): max(NaN, .) is NaN."""
    return (
        max((x[0] - m[0]) * r[0] * g + b, floor), max((x[1] - m[1]) * r[1] * g + b, floor),
        max((x[2] - m[2]) * r[2] * g + b, floor), max((x[3] - m[3]) * r[3] * g + b, floor),
        max((x[4] - m[4]) * r[4] * g + b, floor), max((x[5] - m[5]) * r[5] * g + b, floor),
        max((x[6] - m[6]) * r[6] * g + b, floor), max((x[7] - m[7]) * r[7] * g + b, floor),
        max((x[8] - m[8]) * r[8] * g + b, floor), max((x[9] - m[9]) * r[9] * g + b, floor),
        max((x[10] - m[10]) * r[10] * g + b, floor), max((x[11] - m[11]) * r[11] * g + b, floor),
        max((x[12] - m[12]) * r[12] * g + b, floor), max((x[13] - m[13]) * r[13] * g + b, floor),
        max((x[14] - m[14]) * r[14] * g + b, floor), max((x[15] - m[15]) * r[15] * g + b, floor),
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES)
def _relu(x):
    """max(x, 0), lane-wise: max(NaN, 0) is NaN."""
    zero = np.float32(0.0)
    return (
        max(x[0], zero), max(x[1], zero), max(x[2], zero), max(x[3], zero),
        max(x[4], zero), max(x[5], zero), max(x[6], zero), max(x[7], zero),
        max(x[8], zero), max(x[9], zero), max(x[10], zero), max(x[11], zero),
        max(x[12], zero), max(x[13], zero), max(x[14], zero), max(x[15], zero),
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES)
def _linear(params, start, stop, x, y, width, out):
    """y[:out] = w.T @ x[:width] + bias for the weight w (width, out) at params[start:] and the
    bias at params[stop:], on rows of BLOCK lanes: four outputs at a time, their 4 x 16 sums in
    eight ymm registers over the whole k loop, each input row loaded once for the four (an
    outer-product micro-kernel); then single outputs. Indexes params, where a reshaped view
    would cost a library call and reference counts on every layer of every step."""
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    for j in range(0, out - 3, 4):
        a0, a1 = _splat(params[stop + j]), _splat(params[stop + j + 1])
        a2, a3 = _splat(params[stop + j + 2]), _splat(params[stop + j + 3])
        for k in range(width):
            # an unsigned index: no wrap-around check for negative ones (4 per row)
            xk, wk = _load(x[k]), np.uint64(start + k * out + j)
            a0 = _fma(a0, params[wk], xk)
            a1 = _fma(a1, params[wk + one], xk)
            a2 = _fma(a2, params[wk + two], xk)
            a3 = _fma(a3, params[wk + three], xk)
        _store(y[j], a0)
        _store(y[j + 1], a1)
        _store(y[j + 2], a2)
        _store(y[j + 3], a3)
    for j in range(out - out % 4, out):
        a0 = _splat(params[stop + j])
        for k in range(width):
            a0 = _fma(a0, params[np.uint64(start + k * out + j)], _load(x[k]))
        _store(y[j], a0)


@njit(cache=True, fastmath=_LANES)
def _row_sum(x, width):
    """Each lane's sum over x[:width] (even and odd rows apart: two dependency chains)."""
    odd = width - width % 2
    s0, s1 = _splat(np.float32(0.0)), _splat(np.float32(0.0))
    for j in range(0, odd, 2):
        s0, s1 = _add(s0, _load(x[j])), _add(s1, _load(x[j + 1]))
    if odd < width:
        s0 = _add(s0, _load(x[odd]))
    return _add(s0, s1)


@njit(cache=True, fastmath=_LANES)
def _layer_norm(x, y, params, start, stop, width, eps, floor):
    """y[:width] = LayerNorm of each lane of x[:width] (gamma at params[start:], beta at
    params[stop:]), then max(., floor) (-inf: none; 0: ReLU); the mean, then the variance
    in a second pass, as torch."""
    scale = np.float32(1.0) / np.float32(width)
    mean = _scale(_row_sum(x, width), scale)
    odd = width - width % 2
    s0, s1 = _splat(np.float32(0.0)), _splat(np.float32(0.0))
    for j in range(0, odd, 2):
        s0 = _add_squared_difference(s0, _load(x[j]), mean)
        s1 = _add_squared_difference(s1, _load(x[j + 1]), mean)
    if odd < width:
        s0 = _add_squared_difference(s0, _load(x[odd]), mean)
    inv_std = _inverse_root(_add(s0, s1), scale, eps)
    for j in range(width):
        g, b = params[start + j], params[stop + j]
        _store(y[j], _normalise(_load(x[j]), mean, inv_std, g, b, floor))


@njit(cache=True, fastmath=_LANES)
def _mlp(net, first, end, x, buf):
    """Layers [first, end) of ``net`` on a block of candidates x (width, BLOCK), writing into
    buf's halves (2, >= widest layer, BLOCK) in turn (x is left alone); returns the half that
    holds the output (its first ``dims[end - 1]`` rows)."""
    ops, dims, offsets, eps, params = net
    width, src, half = x.shape[0], x, 0
    for layer in range(first, end):
        op, start, stop = ops[layer], offsets[layer, 0], offsets[layer, 1]
        dst = buf[half]
        if op == LINEAR:
            _linear(params, start, stop, src, dst, width, dims[layer])
            width = dims[layer]
        elif op == RELU:
            for j in range(width):
                _store(dst[j], _relu(_load(src[j])))
        else:
            floor = np.float32(0.0 if op == LAYERNORM_RELU else -np.inf)
            _layer_norm(src, dst, params, start, stop, width, eps[layer], floor)
        src, half = dst, 1 - half
    return src


@njit(cache=True, fastmath=_LANES)
def _root_distance(x, emb, eps):
    """sqrt(||x - emb||^2 + eps) of each lane, over the rows of x and emb (E, BLOCK): the
    task cost's and the critic's form."""
    total = _splat(np.float32(0.0))
    for j in range(emb.shape[0]):
        total = _add_squared_difference(total, _load(x[j]), _load(emb[j]))
    return _root(total, eps)


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
    total = _splat(np.float32(0.0))
    zero = np.float32(0.0)
    for t in range(horizon):
        for r in range(BLOCK):
            for j in range(a_dim):
                x[d + j, r] = cand[bs[r], ns[r], t, j]
        delta = _mlp(net, layers[PREDICTOR, 0], layers[PREDICTOR, 1], x, buf)
        distance = _splat(zero)
        for j in range(d):
            zj = _add(_load(z[j]), _load(delta[j]))
            _store(z[j], zj)
            distance = _add_squared_difference(distance, zj, _load(g[j]))
        total = _fma(total, step_w[t] * coef[0] / np.float32(d), distance)
        out = _mlp(net, layers[COST_HEAD, 0], layers[COST_HEAD, 1], z, buf)
        task = _root_distance(out, cost_emb, np.float32(COST_EPS))
        total = _fma(total, step_w[t] * coef[1], task)
    if has_value and coef[2] > 0:
        out = _mlp(net, layers[CRITIC, 0], layers[CRITIC, 1], z, buf)
        total = _fma(total, coef[2], _root_distance(out, value_emb, np.float32(VALUE_EPS)))
    totals = np.empty(BLOCK, np.float32)
    _store(totals, total)
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


@njit(cache=True, fastmath=_FASTMATH)
def _score(net, layers, coef, has_value, z0, goal, embs, cand, count, step_w, cost):
    """cost = J of the first ``count`` candidates of every row of cand (B, >= count, H, A),
    on this thread; returns whether any was not finite."""
    bad = False
    for first in range(0, cand.shape[0] * count, BLOCK):
        bad |= _score_block(
            first, count, net, layers, coef, has_value, z0, goal, embs, cand, step_w, cost
        )
    return bad


@njit(cache=True, fastmath=_FASTMATH)
def _mlp_row(net, first, end, x, buf):
    """Layers [first, end) of ``net`` on one row x (I,), writing into buf's halves (2, >=
    widest layer) in turn; returns the half that holds the output. Each Linear adds the
    weight's rows (in, out) scaled by the inputs, vectorised along the outputs: for one row
    this beats a block of lanes 15 of which would be padding (the Mode-1 actor, one env)."""
    ops, dims, offsets, eps, params = net
    width, src, half = x.shape[0], x, 0
    zero = np.float32(0.0)
    for layer in range(first, end):
        op, start, stop = ops[layer], offsets[layer, 0], offsets[layer, 1]
        dst = buf[half]
        if op == LINEAR:
            out = dims[layer]
            for j in range(out):
                dst[j] = params[stop + j]
            # four weight rows per pass over the outputs: a quarter of the loads and stores
            for k in range(0, width - 3, 4):
                x0, x1, x2, x3 = src[k], src[k + 1], src[k + 2], src[k + 3]
                w0 = params[start + k * out : start + (k + 1) * out]
                w1 = params[start + (k + 1) * out : start + (k + 2) * out]
                w2 = params[start + (k + 2) * out : start + (k + 3) * out]
                w3 = params[start + (k + 3) * out : start + (k + 4) * out]
                for j in range(out):
                    dst[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j]
            for k in range(width - width % 4, width):
                xk, w = src[k], params[start + k * out : start + (k + 1) * out]
                for j in range(out):
                    dst[j] += xk * w[j]
            width = out
        elif op == RELU:
            for j in range(width):
                dst[j] = max(src[j], zero)  # max(NaN, 0) stays NaN
        else:
            floor = np.float32(0.0 if op == LAYERNORM_RELU else -np.inf)
            mean = zero
            for j in range(width):
                mean += src[j]
            mean /= np.float32(width)
            var = zero
            for j in range(width):
                var += (src[j] - mean) * (src[j] - mean)
            inv_std = np.float32(1.0) / np.sqrt(var / np.float32(width) + eps[layer])
            for j in range(width):
                y = (src[j] - mean) * inv_std * params[start + j] + params[stop + j]
                dst[j] = max(y, floor)
        src, half = dst, 1 - half
    return src


# Up to this many rows, _run_rows runs each on its own (_mlp_row) rather than in a block.
ROW_BY_ROW = 2


@njit(cache=True)
def _run_rows(net, first, end, x):
    """Layers [first, end) of ``net`` on the rows of x (M, I), BLOCK rows at a time (a last
    block's unused lanes hold stale rows, harmless since lanes never mix), or row by row for up
    to ROW_BY_ROW rows -> (M, O)."""
    dims = net[1]
    rows, width = x.shape
    y = np.empty((rows, dims[end - 1]), np.float32)
    if rows <= ROW_BY_ROW:
        buf = np.empty((2, np.max(dims[first:end])), np.float32)
        for r in range(rows):
            out = _mlp_row(net, first, end, x[r], buf)
            for j in range(y.shape[1]):
                y[r, j] = out[j]
        return y
    block = np.zeros((width, BLOCK), np.float32)
    buf = np.empty((2, np.max(dims[first:end]), BLOCK), np.float32)
    for top in range(0, rows, BLOCK):
        n = min(BLOCK, rows - top)
        for r in range(n):
            for j in range(width):
                block[j, r] = x[top + r, j]
        out = _mlp(net, first, end, block, buf)
        for r in range(n):
            for j in range(y.shape[1]):
                y[top + r, j] = out[j, r]
    return y


@njit(cache=True, fastmath=_FASTMATH)
def _actor_actions(actor, mid, half, z, goal_z):
    """The actor on [z, goal_z] (B, D each), tanh, mapped onto (mid +- half) -> (B, A)."""
    rows, d = z.shape
    pair = np.empty((rows, 2 * d), np.float32)
    for r in range(rows):
        for j in range(d):
            pair[r, j], pair[r, d + j] = z[r, j], goal_z[r, j]
    action = _run_rows(actor, 0, len(actor[0]), pair)
    for r in range(rows):
        for j in range(action.shape[1]):
            action[r, j] = mid[j] + np.tanh(action[r, j]) * half[j]
    return action


@njit(cache=True, fastmath=_FASTMATH)
def _act_rows(encoder, actor, mean, std, mid, half, obs, goal):
    """Mode-1 in one call: encode the normalised observations and goals (B, O) with one
    network, the actor on [z, z_goal], tanh, scaled to the bounds (mid +- half) -> (B, A)."""
    rows, width = obs.shape
    both = np.empty((2 * rows, width), np.float32)
    for r in range(rows):
        for j in range(width):
            both[r, j] = (obs[r, j] - mean[j]) / std[j]
            both[rows + r, j] = (goal[r, j] - mean[j]) / std[j]
    z = _run_rows(encoder, 0, len(encoder[0]), both)
    return _actor_actions(actor, mid, half, z[:rows], z[rows:])


@njit(cache=True, fastmath=_FASTMATH)
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
        delta = _run_rows(predictor, 0, len(predictor[0]), step)
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


def run_mlp(net: MLPWeights, x: ArrayLike) -> np.ndarray:
    """An exported MLP (:func:`export_mlp`) on the rows of x (M, I), compiled: one call for
    the whole network (a batch of one pays no per-layer Python) -> (M, O) float32."""
    x = np.ascontiguousarray(x, np.float32)
    return _run_rows(tuple(net), 0, len(net.ops), x)


def _goal_embeddings(model: ExportedModel, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cost head's and the critic's embeddings of each goal (B, D): (B, E1), (B, E2), by
    compiled kernels (one Python call per network: a NumPy forward cost more than the kernel).
    Up to ROW_BY_ROW goals go row by row, as the actor's do, so their sums run in another order
    than the candidates' lanes: the embeddings agree to float32 rounding."""
    net, embs = tuple(model.net), []
    for first, end in model.layers[[COST_HEAD, CRITIC]]:
        if end > first:
            embs.append(_run_rows(net, first, end, goal))
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
        actions.shape[1],
        np.ascontiguousarray(objective.step_weights, np.float32),
        cost,
    )
    return cost


# Only prange runs in parallel: array expressions stay plain loops. On one thread _decide skips
# the prange: the pool still takes each launch, a hand-off that can cost more than the blocks'
# work, and a default decision launches 4.
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
    init_std, min_std, max_std, temperature, alpha, step_w, serial,
):  # fmt: skip
    """One decision of MPPI / CEM / iCEM (``kind``) for B problems; mirrors
    :meth:`wmrobot.planners.sampling.SamplingPlanner.plan` and the planners' hooks.

    mean (B, H, A) the clipped initial mean; noise (I, B, N, H, A); sizes (I,) the samples
    of each iteration; carried (B, C, H, A) of which the first ``n_carried`` join every
    iteration's candidates (iCEM's elites from the last decision, then from the last
    iteration); ``serial``: score the blocks on this thread (one thread), not by prange.
    Returns (plan (B, H, A), the last iteration's ``n_keep`` best elites, whether any cost
    was non-finite).
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
        if serial:
            net, embs = (ops, dims, offsets, eps, params), (cost_emb, value_emb)
            bad |= _score(net, layers, coef, has_value, z0, goal, embs, cand, total, step_w, cost)
        else:
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
        threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(threads)
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
            threads == 1,  # no prange on one thread (see _PRANGE_ONLY)
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
