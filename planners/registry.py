"""The torch planners by name (``planner.name``)."""

from __future__ import annotations

from wmrobot.planners.base import Planner
from wmrobot.planners.cem import CEM
from wmrobot.planners.gradient import GradientPlanner
from wmrobot.planners.icem import ICEM
from wmrobot.planners.mppi import MPPI

TORCH_PLANNERS: dict[str, type[Planner]] = {
    "cem": CEM,
    "icem": ICEM,
    "mppi": MPPI,
    "grad": GradientPlanner,
}
