"""Structured configs: each command's schema; every dataclass checks its own ranges once, when
it is built (``__post_init__``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from wmrobot.agent import MODES
from wmrobot.bench.spec import Suite
from wmrobot.datasets.policies import PolicySpec
from wmrobot.distill import DistillConfig
from wmrobot.errors import ConfigError, EnvError, check_range
from wmrobot.learn import LearnConfig
from wmrobot.model.world_model import ModelConfig
from wmrobot.planners import PlannerConfig
from wmrobot.rl.dream import DreamConfig
from wmrobot.rl.mbpo import BranchConfig
from wmrobot.rl.sac import RLConfig
from wmrobot.train.trainer import TrainConfig


@dataclass
class EvalSetConfig:
    pairs: int = 30
    seed: int = 1234
    budget: Optional[int] = 100  # noqa: UP045  (None: the env's own time limit)
    max_distance: Optional[float] = None  # noqa: UP045
    file: Optional[str] = None  # noqa: UP045  (a frozen set: its pairs and budget win)

    def __post_init__(self) -> None:
        check_range("env.eval.pairs", self.pairs, 1)
        check_range("env.eval.budget", self.budget, 1)
        check_range("env.eval.max_distance", self.max_distance, 0, closed=False)


@dataclass
class EnvConfig:
    id: str
    kwargs: dict[str, Any]
    eval: EvalSetConfig


@dataclass
class PolicyConfig:
    """The fields of :class:`wmrobot.datasets.policies.PolicySpec`, which checks them."""

    name: str = "random"
    beta: float = 0.0
    epsilon: float = 0.0
    noise: float = 0.0
    path: Optional[str] = None  # noqa: UP045
    deterministic: bool = True

    def __post_init__(self) -> None:
        try:
            PolicySpec(**asdict(self)).check()
        except EnvError as e:  # a policy setting: a config error here
            raise ConfigError(str(e)) from None


@dataclass
class ModelSection(ModelConfig):
    train: TrainConfig = MISSING  # required; after ModelConfig's fields with defaults

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.actor:
            raise ConfigError(
                "model.actor=true: the actor head is trained after the world model, by "
                "`wmrobot distill checkpoint=DIR`; drop model.actor"
            )


def _check_run(cmd: Any) -> None:
    """The settings several commands share: seed, threads, episodes, flush_every, seeds."""
    names = {f.name for f in fields(cmd)}
    check_range("seed", getattr(cmd, "seed", None), 0)
    check_range("threads", getattr(cmd, "threads", None), 1)
    check_range("episodes", getattr(cmd, "episodes", None), 1)
    check_range("flush_every", getattr(cmd, "flush_every", None), 1)
    for key in ("seeds", "rl_seeds", "planner_seeds"):
        seeds = getattr(cmd, key) if key in names else None
        if seeds is not None and (any(s < 0 for s in seeds) or (key == "seeds" and not seeds)):
            raise ConfigError(f"{key}={list(seeds)}: give one or more seeds, each >= 0")


@dataclass
class CollectCommand:
    env: EnvConfig
    policy: PolicyConfig
    episodes: int
    steps: Optional[int]  # noqa: UP045
    seed: int
    flush_every: Optional[int]  # noqa: UP045
    workers: int
    pixels: Optional[int]  # noqa: UP045 (OmegaConf reads typing.Optional)
    fast: Optional[bool]  # noqa: UP045
    out: Optional[str]  # noqa: UP045

    def __post_init__(self) -> None:
        _check_run(self)
        check_range("steps", self.steps, 1)
        check_range("workers", self.workers, 1)


@dataclass
class TrainCommand:
    model: ModelSection
    dataset: str
    seed: int
    threads: int
    out: Optional[str]  # noqa: UP045
    resume: bool = False

    def __post_init__(self) -> None:
        _check_run(self)


@dataclass
class AgentConfig:
    mode: str = "2"  # 1 (actor), 2 (planner), hybrid (actor-seeded planner)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"agent.mode={self.mode!r} is not a mode; choose one of {list(MODES)}"
            )


@dataclass
class PlanCommand:
    env: EnvConfig
    planner: PlannerConfig
    checkpoint: str
    agent: AgentConfig
    seeds: list[int]
    baseline: bool
    video: bool
    threads: int
    out: Optional[str]  # noqa: UP045
    dream_agents: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_run(self)


@dataclass
class DemoCommand:
    env: EnvConfig
    policy: PolicyConfig
    model: ModelSection
    planner: PlannerConfig
    rl: RLConfig
    episodes: int
    seed: int
    flush_every: Optional[int]  # noqa: UP045
    seeds: list[int]
    rl_seeds: list[int]
    baseline: bool
    video: bool
    threads: int
    out: Optional[str]  # noqa: UP045

    def __post_init__(self) -> None:
        _check_run(self)


@dataclass
class DistillCommand:
    planner: PlannerConfig
    checkpoint: str
    dataset: Optional[str]  # noqa: UP045
    seed: int
    threads: int
    out: Optional[str]  # noqa: UP045
    actor: DistillConfig

    def __post_init__(self) -> None:
        _check_run(self)


@dataclass
class EvalModelCommand:
    """``wmrobot eval model``; :func:`wmrobot.eval.audit.audit` checks its own arguments."""

    checkpoint: str
    dataset: str
    horizon: int
    seed: int
    max_windows: int
    test_fraction: float
    threads: int
    out: Optional[str]  # noqa: UP045

    def __post_init__(self) -> None:
        _check_run(self)


@dataclass
class LearnCommand:
    env: EnvConfig
    model: ModelSection
    planner: PlannerConfig
    learn: LearnConfig
    seed: int
    threads: int
    out: Optional[str]  # noqa: UP045
    dream: BranchConfig
    resume: bool = False

    def __post_init__(self) -> None:
        _check_run(self)


@dataclass
class DreamCommand:
    env: EnvConfig
    planner: PlannerConfig
    checkpoint: str
    dataset: Optional[str]  # noqa: UP045
    seeds: list[int]
    planner_seeds: list[int]
    baseline: bool
    threads: int
    out: Optional[str]  # noqa: UP045
    dream: DreamConfig
    rl: RLConfig
    rl_seeds: list[int]

    def __post_init__(self) -> None:
        _check_run(self)


@dataclass
class BenchCommand:
    suite: Suite
    workers: int
    launcher: str
    report_only: bool
    out: Optional[str]  # noqa: UP045

    def __post_init__(self) -> None:
        check_range("workers", self.workers, 1)


@dataclass
class CellCommand:
    cell: str
    out: str


SCHEMAS = {
    "collect": CollectCommand,
    "train": TrainCommand,
    "plan": PlanCommand,
    "demo": DemoCommand,
    "distill": DistillCommand,
    "eval_model": EvalModelCommand,
    "learn": LearnCommand,
    "dream": DreamCommand,
    "bench": BenchCommand,
    "cell": CellCommand,
}


def own_sections(command: str, cfg: DictConfig) -> DictConfig:
    """``cfg`` without the sections its command has no use for: a task config carries the
    planner settings that suit the task (``env=reacher``), and collect has no planner."""
    if "planner" in cfg and "planner" not in SCHEMAS[command].__dataclass_fields__:
        return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "planner"])
    return cfg


def validate(command: str, cfg: DictConfig) -> Any:
    """``cfg`` (a composed ``configs/<command>.yaml``) as the command's typed, checked object."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(SCHEMAS[command]), own_sections(command, cfg))
        missing = sorted(OmegaConf.missing_keys(typed))
        if missing:
            raise ConfigError(f"{missing[0]} is required: add {missing[0]}=... to the command")
        return OmegaConf.to_object(typed)
    except OmegaConfBaseException as e:
        key, message = getattr(e, "full_key", None), str(e).splitlines()[0]
        if key and getattr(e, "value", None) is not None:
            raise ConfigError(f"{key}={e.value!r}: {message}") from None
        raise ConfigError(f"{key}: {message}" if key else message) from None
