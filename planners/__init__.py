"""Planners over the Dynamics protocol; they never touch the simulator."""

from wmrobot.planners.dynamics import Dynamics
from wmrobot.planners.mpc import RecedingHorizon
from wmrobot.planners.mppi import MPPI, MPPIConfig

__all__ = ["MPPI", "Dynamics", "MPPIConfig", "RecedingHorizon"]
