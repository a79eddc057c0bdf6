"""Structured configs: the types and ranges every command's composed Hydra config must satisfy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from wmrobot.agent import MODES
from wmrobot.distill import DistillConfig
from wmrobot.errors import ConfigError
from wmrobot.model.world_model import ModelConfig
from wmrobot.planners import PlannerConfig
from wmrobot.rl.sac import RLConfig
from wmrobot.train.trainer import TrainConfig


@dataclass
class EvalSetConfig:
    pairs: int = 30
    seed: int = 1234
    budget: int = 100
    max_distance: Optional[float] = None  # noqa: UP045
    file: Optional[str] = None  # noqa: UP045  (a frozen set: its pairs and budget win)


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


@dataclass
class ModelSection(ModelConfig):
    train: TrainConfig = MISSING  # required; after ModelConfig's fields with defaults


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


@dataclass
class TrainCommand:
    model: ModelSection
    dataset: str
    seed: int
    threads: int
    out: Optional[str]  # noqa: UP045
    resume: bool = False


@dataclass
class AgentConfig:
    mode: str = "2"  # 1 (actor), 2 (planner), hybrid (actor-seeded planner)


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


@dataclass
class DistillCommand:
    planner: PlannerConfig
    checkpoint: str
    dataset: Optional[str]  # noqa: UP045
    seed: int
    threads: int
    out: Optional[str]  # noqa: UP045
    actor: DistillConfig


SCHEMAS = {
    "collect": CollectCommand,
    "train": TrainCommand,
    "plan": PlanCommand,
    "demo": DemoCommand,
    "distill": DistillCommand,
}

RL_ALGOS = ["sac"]

# Ranges checked before any work starts: (lowest, highest, whether the bounds are inclusive).
_POSITIVE_INT = (1, None, True)
_NON_NEGATIVE = (0, None, True)
_POSITIVE = (0, None, False)
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "seed": _NON_NEGATIVE,
    "workers": _POSITIVE_INT,
    "episodes": _POSITIVE_INT,
    "steps": _POSITIVE_INT,
    "flush_every": _POSITIVE_INT,
    "threads": _POSITIVE_INT,
    "env.eval.pairs": _POSITIVE_INT,
    "env.eval.budget": _POSITIVE_INT,
    "env.eval.max_distance": _POSITIVE,
    "policy.beta": _NON_NEGATIVE,
    "policy.epsilon": (0, 1, True),
    "policy.noise": _NON_NEGATIVE,
    "model.latent_dim": _POSITIVE_INT,
    "model.hidden": _POSITIVE_INT,
    "model.depth": _NON_NEGATIVE,
    "model.goal_dim": _POSITIVE_INT,
    "model.ema": (0, 1, True),
    "model.ema_end": (0, 1, True),
    "model.history": _POSITIVE_INT,
    "model.frame_stack": _POSITIVE_INT,
    "model.width": _POSITIVE_INT,
    "model.critic_hidden": _POSITIVE_INT,
    "model.critic_depth": _NON_NEGATIVE,
    "model.critic_embed": _POSITIVE_INT,
    "model.latent_weight": _NON_NEGATIVE,
    "model.cost_weight": _NON_NEGATIVE,
    "model.train.steps": _POSITIVE_INT,
    "model.train.batch_size": (2, None, True),
    "model.train.horizon": _POSITIVE_INT,
    "model.train.lr": _POSITIVE,
    "model.train.weight_decay": _NON_NEGATIVE,
    "model.train.warmup": _NON_NEGATIVE,
    "model.train.grad_clip": _POSITIVE,
    "model.train.log_every": _POSITIVE_INT,
    "model.train.checkpoint_every": _POSITIVE_INT,
    "model.train.loss.prediction": _NON_NEGATIVE,
    "model.train.loss.variance": _NON_NEGATIVE,
    "model.train.loss.covariance": _NON_NEGATIVE,
    "model.train.loss.sigreg": _NON_NEGATIVE,
    "model.train.loss.cost": _NON_NEGATIVE,
    "model.train.loss.critic": _NON_NEGATIVE,
    "model.train.critic.finetune": _NON_NEGATIVE,
    "model.train.critic.batch_size": _POSITIVE_INT,
    "model.train.critic.lr": _POSITIVE,
    "planner.horizon": _POSITIVE_INT,
    "planner.samples": _POSITIVE_INT,
    "planner.iterations": _POSITIVE_INT,
    "planner.elites": _POSITIVE_INT,
    "planner.temperature": _POSITIVE,
    "planner.init_std": _POSITIVE,
    "planner.min_std": _NON_NEGATIVE,
    "planner.max_std": _POSITIVE,
    "planner.terminal_weight": _NON_NEGATIVE,
    "rl.learning_starts": _NON_NEGATIVE,
    "rl.batch_size": _POSITIVE_INT,
    "rl.learning_rate": _POSITIVE,
    "rl.gamma": (0, 1, True),
}


def _check_range(key: str, value: Any) -> None:
    low, high, inclusive = RANGES[key]
    ok = (low is None or (value >= low if inclusive else value > low)) and (
        high is None or (value <= high if inclusive else value < high)
    )
    if not ok:
        if high is None:
            want = f"{'>=' if inclusive else '>'} {low}"
        else:
            want = f"in [{low}, {high}]" if inclusive else f"in ({low}, {high})"
        raise ConfigError(f"{key}={value} is out of range: it must be {want}")


def validate(command: str, cfg: DictConfig) -> Any:
    """Check ``cfg`` against the command's schema and ranges; return the typed object."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(SCHEMAS[command]), cfg)
        missing = sorted(OmegaConf.missing_keys(typed))
        if missing:
            raise ConfigError(f"{missing[0]} is required: add {missing[0]}=... to the command")
        for key in RANGES:
            value = OmegaConf.select(typed, key, default=None)
            if value is not None:
                _check_range(key, value)
        for key in ("seeds", "rl_seeds"):
            seeds = OmegaConf.select(typed, key, default=None)
            if seeds is not None and (any(s < 0 for s in seeds) or (key == "seeds" and not seeds)):
                raise ConfigError(f"{key}={list(seeds)}: give one or more seeds, each >= 0")
        mode = OmegaConf.select(typed, "agent.mode", default=None)
        if mode is not None and mode not in MODES:
            raise ConfigError(f"agent.mode={mode!r} is not a mode; choose one of {list(MODES)}")
        if OmegaConf.select(typed, "model.actor", default=False):
            raise ConfigError(
                "model.actor=true: the actor head is trained after the world model, by "
                "`wmrobot distill checkpoint=DIR`; drop model.actor"
            )
        algo = OmegaConf.select(typed, "rl.algo", default=None)
        if algo is not None and algo not in RL_ALGOS:
            raise ConfigError(f"rl.algo={algo!r} is not available; choose one of {RL_ALGOS}")
        if "planner" in typed and typed.planner.elites > typed.planner.samples:
            raise ConfigError(
                f"planner.elites={typed.planner.elites} exceeds planner.samples="
                f"{typed.planner.samples}: lower elites or raise samples"
            )
        return OmegaConf.to_object(typed)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        message = str(e).splitlines()[0]
        raise ConfigError(f"{key}: {message}" if key else message) from None
