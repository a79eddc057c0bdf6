"""The Numba backend's planners: MPPI, CEM and iCEM, each decision one compiled call
(sampling, scoring, elite refit), on the packed export of the model.

Both backends consume the same :func:`~wmrobot.planners.noise.draw_noise` array and the same
planner classes' bookkeeping, so one seed gives one plan on both (up to float32 rounding). A
reward task's policy-prior sequences are the exception: torch samples them with a torch
generator, Numba with the planner's NumPy rng (``planner.policy_samples=0`` has none). The
blocks of candidates are spread over Numba's threads (as many as torch's:
``torch.set_num_threads``) by a ``prange``, or scored in the calling thread on one.
:func:`choose_backend` times both on the model at hand and picks the faster (``backend=auto``).
"""

from __future__ import annotations

import logging
import time

import numba
import numpy as np
import torch
from numba import njit, prange

from wmrobot.errors import ConfigError
from wmrobot.planners.base import Planner
from wmrobot.planners.cem import CEM
from wmrobot.planners.config import PlannerConfig, as_config
from wmrobot.planners.dynamics import Dynamics
from wmrobot.planners.icem import ICEM
from wmrobot.planners.mppi import MPPI
from wmrobot.planners.noise import draw_noise
from wmrobot.planners.numba.kernels import BLOCK, FASTMATH
from wmrobot.planners.numba.refit import CEM_KIND, ICEM_KIND, MPPI_KIND, refit_row
from wmrobot.planners.numba.scoring import (
    coefficients,
    goal_embeddings,
    pack_model,
    policy_rollout,
    score_block,
    score_candidates,
    step_weights,
)
from wmrobot.planners.registry import TORCH_PLANNERS

log = logging.getLogger(__name__)

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


@njit(cache=True, fastmath=FASTMATH, parallel=_PRANGE_ONLY)
def _decide(
    ops, dims, offsets, eps, params, layers, coef, has_value, z0, goal, cost_emb,
    value_emb, points, bounds, prior_eps, mean, noise, sizes, carried, n_carried, low, high,
    kind, elites, n_keep, init_std, min_std, max_std, temperature, alpha, step_w, serial,
):  # fmt: skip
    """One decision of MPPI / CEM / iCEM (``kind``) for B problems; mirrors
    :meth:`wmrobot.planners.sampling.SamplingPlanner.plan` and the planners' hooks.

    mean (B, H, A) the clipped initial mean; noise (I, B, N, H, A); sizes (I,) the samples
    of each iteration; carried (B, C, H, A) of which the first ``n_carried`` join every
    iteration's candidates (iCEM's elites from the last decision, then from the last
    iteration); prior_eps (B, P, H, A) the noise of P policy-prior sequences (a reward task's,
    :func:`~wmrobot.planners.numba.scoring.policy_rollout`), scored at every iteration after
    those; ``serial``: score the blocks on this thread (one thread), not by prange.
    Returns (plan (B, H, A), the last iteration's ``n_keep`` best elites, whether any cost
    was non-finite).
    """
    batch, horizon, a_dim = mean.shape
    mean, std = mean.copy(), np.full(mean.shape, init_std, np.float32)
    best, best_cost = mean.copy(), np.full(batch, np.inf, np.float32)
    n_prior = prior_eps.shape[1]
    prior = np.empty(prior_eps.shape, np.float32)
    net = (ops, dims, offsets, eps, params)
    policy_rollout(net, layers, coef, bounds, z0, prior_eps, prior)
    pool = noise.shape[2] + max(carried.shape[1], n_keep) + n_prior
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
        cand[:, total : total + n_prior] = prior
        total += n_prior
        if serial:
            embs = (cost_emb, value_emb)
            bad |= score_candidates(
                net, layers, coef, has_value, z0, goal, embs, points, bounds, cand, total,
                step_w, cost,
            )  # fmt: skip
        else:
            blocks = (batch * total + BLOCK - 1) // BLOCK
            scored = np.zeros(blocks, np.bool_)
            for block in prange(blocks):
                # a prange body cannot capture tuples, so they are built inside; prange counts
                # in uint64, and the cast keeps one compiled score_block
                block_net, embs = (ops, dims, offsets, eps, params), (cost_emb, value_emb)
                scored[block] = score_block(
                    np.int64(block) * BLOCK, total, block_net, layers, coef, has_value, z0, goal,
                    embs, points, bounds, cand, step_w, cost,
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
            if np.isfinite(ec[0]):  # else no finite candidate: the row keeps its mean and std
                refit_row(kind, mean[b], std[b], el, ec, temperature, alpha, min_std, max_std)
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
        self._pack(check=True)
        self._low = self.low.numpy().astype(np.float32)
        self._high = self.high.numpy().astype(np.float32)

    def _pack(self, check: bool) -> None:
        self.packed = pack_model(self.dynamics, check=check)
        objective = self.objective
        self.step_weights = step_weights(self.packed, objective)
        self.coef = coefficients(self.packed, objective.value_weight, objective.smooth_weight)

    def refresh(self) -> None:
        """Re-read the model's weights (same architecture: checked when first packed)."""
        self._pack(check=False)

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
        # the policy prior's noise, from the planner's rng as the Gaussian's (torch draws its own)
        n_prior = cfg.policy_samples if self.packed.reward else 0
        prior_eps = self.rng.standard_normal((batch, n_prior, cfg.horizon, a_dim), np.float32)
        threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(threads)
        model, goal = self.packed, _as_f32(goal_z)
        plan, keep, bad = _decide(
            *model.net,
            model.layers,
            self.coef,
            model.has_value,
            _as_f32(z0),
            goal,
            *goal_embeddings(model, goal),
            model.points,
            model.bounds,
            prior_eps,
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
    cfg = as_config(cfg)
    on_cpu = torch.as_tensor(dynamics.action_low).device.type == "cpu"
    if cfg.name not in NUMBA_PLANNERS or not on_cpu:
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
