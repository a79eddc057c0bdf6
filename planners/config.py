"""One configuration for every planner (configs/planner/<name>.yaml), checked when built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

from wmrobot.errors import ConfigError

PLANNER_NAMES = ("cem", "icem", "mppi", "grad")
BACKENDS = ("torch", "numba", "auto")


@dataclass
class PlannerConfig:
    """Budget, bounds and objective of a planner; each planner reads the fields it uses.

    Sampling (cem, icem, mppi): ``iterations`` rounds of ``samples`` candidates around a
    Gaussian (``init_std``, clamped to [``min_std``, ``max_std``]) refitted to the ``elites``
    best. MPPI weights its elites by softmax(-cost / ``temperature``); CEM and iCEM smooth the
    refit with ``alpha`` (mean = alpha * old + (1 - alpha) * new). iCEM samples noise colored
    by 1/f^``beta``, shrinks the population by ``decay`` per iteration and carries a
    ``keep_elites`` fraction of its elites to the next iteration and the next decision.
    Gradient (grad): ``grad_steps`` Adam steps of rate ``lr`` on the action sequence, from a
    CEM plan first if ``refine_with_cem``.
    Objective: costs over the horizon, the last weighted ``terminal_weight``, plus
    ``value_weight`` x the critic's cost-to-go (if the model has one) plus ``smooth_weight`` x
    the squared action differences; on a reward task, minus the predicted return. The
    controller replans every ``replan_every`` steps. On a reward task the sampling planners
    also score ``policy_samples`` sequences of the model's policy prior at every iteration.
    """

    horizon: int
    samples: int
    iterations: int
    elites: int
    init_std: float
    min_std: float
    max_std: float
    terminal_weight: float
    temperature: float = 0.5
    name: str = "mppi"
    backend: str = "auto"
    value_weight: float = 7.0
    smooth_weight: float = 0.0
    alpha: float = 0.1
    beta: float = 0.0
    decay: float = 1.25
    keep_elites: float = 0.3
    lr: float = 0.1
    grad_steps: int = 20
    refine_with_cem: bool = False
    replan_every: int = 1
    policy_samples: int = 24

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first value out of range and the fix."""
        if self.name not in PLANNER_NAMES:
            _bad("name", self.name, f"unknown planner; choose one of {list(PLANNER_NAMES)}")
        if self.backend not in BACKENDS:
            _bad("backend", self.backend, f"unknown backend; choose one of {list(BACKENDS)}")
        for key in ("horizon", "samples", "iterations", "elites", "grad_steps", "replan_every"):
            if getattr(self, key) < 1:
                _bad(key, getattr(self, key), "it must be >= 1")
        for key in ("init_std", "max_std", "temperature", "lr"):
            if not getattr(self, key) > 0:
                _bad(key, getattr(self, key), "it must be > 0")
        for key in ("min_std", "terminal_weight", "value_weight", "smooth_weight", "beta"):
            if not getattr(self, key) >= 0:
                _bad(key, getattr(self, key), "it must be >= 0")
        if self.policy_samples < 0:
            _bad("policy_samples", self.policy_samples, "it must be >= 0")
        if self.elites > self.samples:
            raise ConfigError(
                f"planner.elites={self.elites} exceeds planner.samples={self.samples}: "
                "lower elites or raise samples"
            )
        if self.min_std > self.max_std:
            _bad("min_std", self.min_std, f"it exceeds planner.max_std={self.max_std}: lower it")
        if self.replan_every > self.horizon:
            _bad("replan_every", self.replan_every, f"it exceeds planner.horizon={self.horizon}")
        if not 0 <= self.alpha < 1:
            _bad("alpha", self.alpha, "it must be in [0, 1)")
        if not 0 <= self.keep_elites <= 1:
            _bad("keep_elites", self.keep_elites, "it must be in [0, 1]")
        if not self.decay >= 1:
            _bad("decay", self.decay, "it must be >= 1 (1 keeps the population constant)")
        if self.horizon == 1 and self.terminal_weight == 0:
            _bad("terminal_weight", 0, "with horizon=1 it weighs the only step: make it > 0")


# The name other code imports (the MPPI fields are a subset of these).
MPPIConfig = PlannerConfig


def _bad(key: str, value: Any, fix: str) -> None:
    raise ConfigError(f"planner.{key}={value!r}: {fix}")


def as_config(cfg: PlannerConfig | Mapping[str, Any]) -> PlannerConfig:
    """A :class:`PlannerConfig` from itself or a mapping (a dict, an OmegaConf node)."""
    if isinstance(cfg, PlannerConfig):
        cfg.check()
        return cfg
    known = {f.name for f in fields(PlannerConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"planner.{unknown[0]} is not a planner setting; drop it")
    missing = [f.name for f in fields(PlannerConfig) if f.default is MISSING and f.name not in cfg]
    if missing:
        raise ConfigError(f"planner.{missing[0]} is required: add planner.{missing[0]}=...")
    return PlannerConfig(**dict(cfg))
