"""The Numba backend's layer kernels: exported MLPs packed into flat arrays, run on blocks of
candidates in SIMD lanes (the planners' scoring) or row by row (one env's actor).

Candidates go through a network in blocks of :data:`BLOCK`, one candidate per SIMD lane, each
Linear an outer-product micro-kernel over the block.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from wmrobot.errors import ConfigError
from wmrobot.planners.dynamics import LayerExport

LINEAR, LAYERNORM, RELU, LAYERNORM_RELU = 0, 1, 2, 3  # the last: LayerNorm, then ReLU
# Reassociation lets LLVM vectorise the reductions; no "nnan"/"ninf": a NaN cost must stay NaN.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
# Numba's workqueue layer hands a decision's blocks to threads at a fraction of the cost of its
# OpenMP layer (its default where TBB is missing): benchmarks/planner_latency.py. A layer the
# user chose (NUMBA_THREADING_LAYER) is kept.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"
# LLVM's SLP vectoriser, off in Numba by default, is what packs the lane kernels' tuples into
# vector registers (without it they run many times slower). Numba reads the flag when it
# builds a function, and its disk cache does not key on it, so it is on before any kernel of
# this package can compile; a setting the user chose (NUMBA_SLP_VECTORIZE) is kept.
if "NUMBA_SLP_VECTORIZE" not in os.environ:
    numba.config.SLP_VECTORIZE = 1


class MLPWeights(NamedTuple):
    """One MLP of Linear / LayerNorm / ReLU layers as flat arrays (layer l of L).

    ``ops`` (L,) layer kinds; ``dims`` (L,) output widths; ``offsets`` (L, 2) where the
    weight (LINEAR: (in, out); LayerNorm: gamma) and the bias
    (LayerNorm: beta) start in ``params``; ``eps`` (L,) LayerNorm eps.
    """

    ops: np.ndarray
    dims: np.ndarray
    offsets: np.ndarray
    eps: np.ndarray
    params: np.ndarray


def pack_mlp(layers: Sequence[LayerExport] | None, in_dim: int, what: str) -> MLPWeights:
    """An exported MLP (:class:`~wmrobot.planners.dynamics.LayerExport` s) taking ``in_dim``,
    as the kernels' flat arrays; :class:`ConfigError` for anything but Linear/LayerNorm/ReLU."""
    if layers is None:
        raise ConfigError(
            f"the numba backend runs nn.Sequential MLPs; this model's {what} is not one: "
            f"use planner.backend=torch"
        )
    ops, dims, offsets, eps, params = [], [], [], [], []
    size, width = 0, in_dim
    for layer in layers:
        if layer.kind == "linear":
            out, inp = layer.weight.shape
            if inp != width:
                raise ConfigError(f"the {what}'s Linear({inp}, {out}) does not take width {width}")
            kind, blocks = LINEAR, [layer.weight.T, layer.bias]  # weight (in, out)
            width = out
        elif layer.kind == "layernorm":
            if layer.weight.shape != (width,):
                raise ConfigError(
                    f"the {what}'s LayerNorm{layer.weight.shape} does not normalise width {width}"
                )
            kind, blocks = LAYERNORM, [layer.weight, layer.bias]
        elif layer.kind == "relu":
            if ops and ops[-1] == LAYERNORM:  # fused: one pass instead of two
                ops[-1] = LAYERNORM_RELU
                continue
            kind, blocks = RELU, []
        else:
            raise ConfigError(
                f"the numba backend runs Linear/LayerNorm/ReLU layers; the {what} has "
                f"{layer.kind}: use planner.backend=torch"
            )
        ops.append(kind)
        dims.append(width)
        eps.append(layer.eps if kind == LAYERNORM else 0.0)
        starts = [size, size + (blocks[0].size if blocks else 0)]
        offsets.append(starts)
        params += [np.asarray(b, np.float32).ravel() for b in blocks]
        size += sum(b.size for b in blocks)
    return MLPWeights(
        np.array(ops, np.int64),
        np.array(dims, np.int64),
        np.array(offsets, np.int64).reshape(-1, 2),
        np.array(eps, np.float32),
        np.concatenate(params).astype(np.float32) if params else np.zeros(1, np.float32),
    )


# Candidates are scored BLOCK at a time, each activation held feature-major, (width, BLOCK): a
# row holds one feature of the block's 16 candidates, two AVX2 vectors. Every layer is then
# lane-wise over the candidates: a Linear is a sum of outer products (one weight times one input
# row, added to an output row), LayerNorm's reductions are row additions, and no step ever mixes
# two candidates' lanes (a NaN candidate leaves its block mates alone).
BLOCK = 16  # the lane helpers (splat, load, fma, ...) are written out for 16
# The lane kernels below hold a row of the block as a tuple of 16 float32 (SSA values, not
# memory); LLVM's SLP vectoriser (switched on at import, above) packs each tuple into two ymm
# registers. No "reassoc" there: it would let the loop vectoriser turn each lane's sum over k
# into a reduction of its own (64 spilled accumulators, many times slower), and a lane's sum
# then runs in one fixed order, so a candidate scores the same in any lane.
_LANES = {"contract", "nsz", "arcp"}


@njit(cache=True, fastmath=_LANES)
def splat(v):
    """(v,) * 16."""
    return (v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v)


@njit(cache=True, fastmath=_LANES)
def load(x):
    """x[:16] as a tuple."""
    return (
        x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7],
        x[8], x[9], x[10], x[11], x[12], x[13], x[14], x[15],
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES)
def store(y, a):
    """y[:16] = a."""
    y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7] = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
    y[8], y[9], y[10], y[11] = a[8], a[9], a[10], a[11]
    y[12], y[13], y[14], y[15] = a[12], a[13], a[14], a[15]


@njit(cache=True, fastmath=_LANES)
def fma(a, w, x):
    """a + w * x, lane-wise (w a scalar)."""
    return (
        a[0] + w * x[0], a[1] + w * x[1], a[2] + w * x[2], a[3] + w * x[3],
        a[4] + w * x[4], a[5] + w * x[5], a[6] + w * x[6], a[7] + w * x[7],
        a[8] + w * x[8], a[9] + w * x[9], a[10] + w * x[10], a[11] + w * x[11],
        a[12] + w * x[12], a[13] + w * x[13], a[14] + w * x[14], a[15] + w * x[15],
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES)
def add(a, x):
    """a + x, lane-wise."""
    return (
        a[0] + x[0], a[1] + x[1], a[2] + x[2], a[3] + x[3],
        a[4] + x[4], a[5] + x[5], a[6] + x[6], a[7] + x[7],
        a[8] + x[8], a[9] + x[9], a[10] + x[10], a[11] + x[11],
        a[12] + x[12], a[13] + x[13], a[14] + x[14], a[15] + x[15],
    )  # fmt: skip


@njit(cache=True, fastmath=_LANES)
def add_squared_difference(a, x, m):
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
def root(a, eps):
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
        a0, a1 = splat(params[stop + j]), splat(params[stop + j + 1])
        a2, a3 = splat(params[stop + j + 2]), splat(params[stop + j + 3])
        for k in range(width):
            # an unsigned index: no wrap-around check for negative ones (4 per row)
            xk, wk = load(x[k]), np.uint64(start + k * out + j)
            a0 = fma(a0, params[wk], xk)
            a1 = fma(a1, params[wk + one], xk)
            a2 = fma(a2, params[wk + two], xk)
            a3 = fma(a3, params[wk + three], xk)
        store(y[j], a0)
        store(y[j + 1], a1)
        store(y[j + 2], a2)
        store(y[j + 3], a3)
    for j in range(out - out % 4, out):
        a0 = splat(params[stop + j])
        for k in range(width):
            a0 = fma(a0, params[np.uint64(start + k * out + j)], load(x[k]))
        store(y[j], a0)


@njit(cache=True, fastmath=_LANES)
def _row_sum(x, width):
    """Each lane's sum over x[:width] (even and odd rows apart: two dependency chains)."""
    odd = width - width % 2
    s0, s1 = splat(np.float32(0.0)), splat(np.float32(0.0))
    for j in range(0, odd, 2):
        s0, s1 = add(s0, load(x[j])), add(s1, load(x[j + 1]))
    if odd < width:
        s0 = add(s0, load(x[odd]))
    return add(s0, s1)


@njit(cache=True, fastmath=_LANES)
def _layer_norm(x, y, params, start, stop, width, eps, floor):
    """y[:width] = LayerNorm of each lane of x[:width] (gamma at params[start:], beta at
    params[stop:]), then max(., floor) (-inf: none; 0: ReLU); the mean, then the variance
    in a second pass, as torch."""
    scale = np.float32(1.0) / np.float32(width)
    mean = _scale(_row_sum(x, width), scale)
    odd = width - width % 2
    s0, s1 = splat(np.float32(0.0)), splat(np.float32(0.0))
    for j in range(0, odd, 2):
        s0 = add_squared_difference(s0, load(x[j]), mean)
        s1 = add_squared_difference(s1, load(x[j + 1]), mean)
    if odd < width:
        s0 = add_squared_difference(s0, load(x[odd]), mean)
    inv_std = _inverse_root(add(s0, s1), scale, eps)
    for j in range(width):
        g, b = params[start + j], params[stop + j]
        store(y[j], _normalise(load(x[j]), mean, inv_std, g, b, floor))


@njit(cache=True, fastmath=_LANES)
def mlp_block(net, first, end, x, buf):
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
                store(dst[j], _relu(load(src[j])))
        else:
            floor = np.float32(0.0 if op == LAYERNORM_RELU else -np.inf)
            _layer_norm(src, dst, params, start, stop, width, eps[layer], floor)
        src, half = dst, 1 - half
    return src


@njit(cache=True, fastmath=_LANES)
def root_distance(x, emb, eps):
    """sqrt(||x - emb||^2 + eps) of each lane, over the rows of x and emb (E, BLOCK): the
    task cost's and the critic's form."""
    total = splat(np.float32(0.0))
    for j in range(emb.shape[0]):
        total = add_squared_difference(total, load(x[j]), load(emb[j]))
    return root(total, eps)


@njit(cache=True, fastmath=FASTMATH)
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


# Up to this many rows, run_rows runs each on its own (_mlp_row) rather than in a block.
ROW_BY_ROW = 2


@njit(cache=True)
def run_rows(net, first, end, x):
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
        out = mlp_block(net, first, end, block, buf)
        for r in range(n):
            for j in range(y.shape[1]):
                y[top + r, j] = out[j, r]
    return y


def run_mlp(net: MLPWeights, x: ArrayLike) -> np.ndarray:
    """A packed MLP (:func:`pack_mlp`) on the rows of x (M, I), compiled: one call for
    the whole network (a batch of one pays no per-layer Python) -> (M, O) float32."""
    x = np.ascontiguousarray(x, np.float32)
    return run_rows(tuple(net), 0, len(net.ops), x)
