"""A bench suite's specification (``configs/suite/<name>.yaml``): tasks x methods x env-step
budgets x seeds, and the names of its cells. Plain data, read by the command schemas."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from wmrobot.errors import ConfigError, check_range

METHODS = ("random", "mppi", "mode1", "dream", "mbpo", "gcbc", "gciql", "sac", "ppo")
MODEL_FREE = ("sac", "ppo")
WORLD_MODEL = ("mppi", "mode1", "dream", "mbpo")  # wmrobot's own methods
# Published fixed-budget success rates of the peers on their versions of our tasks, all from
# camera frames (ours in a suite are from the state unless its task says pixels): DINO-WM
# (Zhou et al. 2024) and LeWM, as cited in issue 25. Their maze is D4RL's, their Reacher DMC's;
# DINO-WM's Push-T success rises with data (200 trajectories 8%, 1k 48%, 5k 72%, 10k 88%,
# 18.5k 92%). Keyed by our env config name.
PEERS: dict[str, list[tuple[str, str, str]]] = {
    "pointmaze_umaze": [("DINO-WM", "98%", "pixels; D4RL's PointMaze")],
    "pointmaze_medium": [("DINO-WM", "98%", "pixels; D4RL's PointMaze")],
    "tworoom": [("DINO-WM", "100%", "pixels; their Two-Room")],
    "push": [("DINO-WM", "90%", "pixels; 2D Push-T, 18.5k trajectories: 92%"),
             ("LeWM", "96%", "pixels; 2D Push-T")],
    "reacher": [("LeWM", "86%", "pixels; DMC's Reacher")],
}  # fmt: skip
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass
class TaskSpec:
    """A task of the suite: an env config (``configs/env/<env>.yaml``) and overrides of the
    commands' configs for it (``env.*``, ``model.*``, ``policy.*``, ``planner.*``)."""

    env: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class Suite:
    """Tasks x methods x env-step budgets x seeds (``configs/suite/<name>.yaml``)."""

    name: str
    tasks: dict[str, TaskSpec]
    methods: list[str]
    budgets: list[int]
    seeds: list[int]
    dream_steps: int = 100_000

    def __post_init__(self) -> None:
        self.tasks = {
            k: v if isinstance(v, TaskSpec) else TaskSpec(**v) for k, v in self.tasks.items()
        }
        if not self.tasks:
            raise ConfigError("suite.tasks is empty; name at least one task: {name: {env: ...}}")
        for name in self.tasks:
            if not NAME.match(name):
                raise ConfigError(f"suite.tasks: {name!r} must be a letter then letters, digits, _")
        for method in self.methods:
            if method not in METHODS:
                raise ConfigError(f"suite.methods: {method!r} is unknown; choose from {METHODS}")
        if not self.methods or not self.budgets or not self.seeds:
            raise ConfigError("suite.methods, suite.budgets and suite.seeds need a value each")
        for budget in self.budgets:
            check_range("suite.budgets", budget, 1)
        for seed in self.seeds:
            check_range("suite.seeds", seed, 0)
        check_range("suite.dream_steps", self.dream_steps, 1)
        self.budgets = sorted(set(int(b) for b in self.budgets))

    def cells(self) -> list[str]:
        return [cell_id(t, m, b, s) for t in self.tasks for m in self.methods
                for b in self.budgets for s in self.seeds]  # fmt: skip

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cell_id(task: str, method: str, budget: int, seed: int) -> str:
    return f"{task}-{method}-{budget}-s{seed}"


def parse_cell(cell: str) -> tuple[str, str, int, int]:
    """``task-method-budget-sSEED`` -> its parts, or a one-line error."""
    parts = cell.split("-")
    if len(parts) != 4 or not parts[2].isdigit() or not re.fullmatch(r"s\d+", parts[3]):
        raise ConfigError(
            f"cell={cell!r} is not TASK-METHOD-BUDGET-sSEED (e.g. umaze-mppi-10000-s0)"
        )
    return parts[0], parts[1], int(parts[2]), int(parts[3][1:])
