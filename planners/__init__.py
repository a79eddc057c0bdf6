"""Planners over the Dynamics protocol; they never touch the simulator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wmrobot.planners.base import Objective, Planner
from wmrobot.planners.cem import CEM
from wmrobot.planners.config import PLANNER_NAMES, MPPIConfig, PlannerConfig, as_config
from wmrobot.planners.dynamics import Dynamics
from wmrobot.planners.gradient import GradientPlanner
from wmrobot.planners.icem import ICEM
from wmrobot.planners.mpc import RecedingHorizon
from wmrobot.planners.mppi import MPPI
from wmrobot.planners.noise import draw_noise
from wmrobot.planners.registry import TORCH_PLANNERS


def make_planner(
    dynamics: Dynamics, cfg: PlannerConfig | Mapping[str, Any], seed: int = 0
) -> Planner:
    """The planner ``cfg.name`` on ``cfg.backend``: torch, numba, or auto (the faster of the
    two on this model, measured now: :func:`~wmrobot.planners.numba.choose_backend`)."""
    cfg = as_config(cfg)
    backend = cfg.backend
    if backend == "auto":
        from wmrobot.planners.numba import choose_backend

        backend = choose_backend(dynamics, cfg, seed)
    if backend == "numba":
        from wmrobot.planners.numba import make_numba_planner

        return make_numba_planner(dynamics, cfg, seed)
    return TORCH_PLANNERS[cfg.name](dynamics, cfg, seed)


__all__ = [
    "CEM",
    "ICEM",
    "MPPI",
    "PLANNER_NAMES",
    "TORCH_PLANNERS",
    "as_config",
    "Dynamics",
    "GradientPlanner",
    "MPPIConfig",
    "Objective",
    "Planner",
    "PlannerConfig",
    "RecedingHorizon",
    "draw_noise",
    "make_planner",
]
