"""The planner-vs-RL benchmark: methods evaluated side by side on a task's fixed set
(:mod:`wmrobot.bench.evaluate`: rows, tables, plots) and suites of resumable cells at equal
env-step budgets (:mod:`wmrobot.bench.suite`, ``wmrobot bench``).

The evaluation names are re-exported lazily, so that reading a suite's config does not import
matplotlib and the agents."""

from __future__ import annotations

from importlib import import_module
from typing import Any

EVALUATE = (
    "DISPLAY_NAMES", "MethodResult", "evaluate_actor", "evaluate_dream", "evaluate_planner",
    "evaluate_random", "goal_observation", "print_table", "rl_result", "summarise",
    "write_report", "_runs",
)  # fmt: skip

__all__ = [n for n in EVALUATE if not n.startswith("_")]


def __getattr__(name: str) -> Any:
    if name in EVALUATE:
        return getattr(import_module("wmrobot.bench.evaluate"), name)
    raise AttributeError(f"module 'wmrobot.bench' has no attribute {name!r}")
