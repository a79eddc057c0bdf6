"""The JEPA world model: encoder, EMA target encoder, action-conditioned predictor, cost and
critic heads (DESIGN.md section 4)."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from wmrobot.datasets.stats import STD_FLOOR
from wmrobot.errors import CheckpointError, ConfigError, check_range
from wmrobot.model.checkpoint import META, WEIGHTS, read_meta, read_weights, write_model_dir
from wmrobot.model.encoders import make_encoder
from wmrobot.model.export import ExportedModel, export_model
from wmrobot.model.heads import Actor, Critic
from wmrobot.model.layers import COST_EPS, mlp
from wmrobot.model.predictors import make_predictor
from wmrobot.model.reward import SCALAR_LOSSES, GaussianPolicy, QEnsemble, Scalar

TASKS = ("goal", "reward")
ENCODERS = ("mlp", "cnn", "fusion")
PREDICTORS = ("mlp", "gru", "transformer")
# Encoder input name -> the dataset key it reads (and the env observation key it comes from).
INPUT_KEYS = {"state": "obs/observation", "pixels": "pixels"}
GOAL_KEYS = {"pixels": "goal_pixels"}  # the goal image of a pixel observation, if the env has it


@dataclass
class ModelConfig:
    """Sizes and choices of :class:`WorldModel` (``configs/model/*.yaml`` fills them).

    ``encoder``: mlp (state vector), cnn (pixels) or fusion (pixels + state);
    ``predictor``: mlp (residual), gru or transformer (over ``history`` latents);
    ``ema``: the target encoder's momentum at the start of training, rising to ``ema_end``
    on a cosine schedule (I-JEPA; null keeps it constant); 0 makes the target a
    stop-gradient copy of the online encoder.
    ``critic``: also learn a goal-conditioned cost-to-go for planners' terminal cost.
    ``proprio`` (fusion only): the indices of the state vector the encoder reads beside the
    frames, the agent's own state (e.g. Reacher's joint speeds ``[4, 5]``, Push's pusher
    ``[0, 1, 2, 3]``); None: the whole vector.
    ``ensemble``: how many predictors (1: one). Members beyond the first learn the same
    transitions on the detached latents, so they never move the encoder or the first
    predictor; their disagreement (:meth:`WorldModel.disagreement`) is the model's own
    estimate of its error (MOPO), which dream rollouts can be penalised by. Planners and
    rollouts use the first. MLP predictors only.
    ``task``: "goal" (cost head, goal-conditioned critic) or "reward" (reward head r(z, a),
    continuation head c(z) when ``continuation``, an ensemble of ``q_heads`` action-value
    heads with target networks, and a Gaussian policy prior; ``head_hidden`` wide,
    ``head_depth`` deep, discount ``gamma``; None: set from the env's episode length when the
    model is built for a dataset). ``reward_loss`` picks how rewards and values
    are learnt (:mod:`wmrobot.model.reward`); ``reward_scale`` is the regression's unit (None:
    the dataset's reward RMS, set when the model is built for it).
    """

    latent_dim: int
    hidden: int
    depth: int
    goal_dim: int
    ema: float
    latent_weight: float
    cost_weight: float
    encoder: str = "mlp"
    predictor: str = "mlp"
    history: int = 8
    frame_stack: int = 1
    width: int = 32
    proprio: Optional[list[int]] = None  # noqa: UP045
    ema_end: Optional[float] = None  # noqa: UP045 (OmegaConf reads typing.Optional)
    ensemble: int = 1
    critic: bool = False
    critic_hidden: int = 128
    critic_depth: int = 2
    critic_embed: int = 32
    actor: bool = False
    actor_hidden: int = 256
    actor_depth: int = 2
    task: str = "goal"
    reward_loss: str = "regression"
    bins: int = 101
    reward_scale: Optional[float] = None  # noqa: UP045 (None: the data's reward RMS)
    q_heads: int = 2
    head_hidden: int = 256
    head_depth: int = 2
    gamma: Optional[float] = 0.99  # noqa: UP045 (None: from the env's episode length)
    continuation: Optional[bool] = None  # noqa: UP045 (None: whether the data terminates)

    def __post_init__(self) -> None:
        if self.task not in (*TASKS, "auto"):
            raise ConfigError(
                f"model.task={self.task!r} is unknown; choose from {(*TASKS, 'auto')}"
            )
        if self.reward_loss not in SCALAR_LOSSES:
            raise ConfigError(
                f"model.reward_loss={self.reward_loss!r} is unknown; choose from {SCALAR_LOSSES}"
            )
        check_range("model.bins", self.bins, 3)
        check_range("model.q_heads", self.q_heads, 1)
        check_range("model.head_hidden", self.head_hidden, 1)
        check_range("model.head_depth", self.head_depth, 0)
        check_range("model.gamma", self.gamma, 0, 1)
        check_range("model.reward_scale", self.reward_scale, 0, closed=False)
        check_range("model.ensemble", self.ensemble, 1)
        if self.ensemble > 1 and self.predictor != "mlp":
            raise ConfigError(
                f"model.ensemble={self.ensemble} needs model.predictor=mlp (now "
                f"{self.predictor}); drop the ensemble or use the MLP predictor"
            )
        for key in ("latent_dim", "hidden", "goal_dim", "history", "frame_stack", "width"):
            check_range(f"model.{key}", getattr(self, key), 1)
        for key in ("critic_hidden", "critic_embed", "actor_hidden"):
            check_range(f"model.{key}", getattr(self, key), 1)
        for key in ("depth", "critic_depth", "actor_depth", "latent_weight", "cost_weight"):
            check_range(f"model.{key}", getattr(self, key), 0)
        check_range("model.ema", self.ema, 0, 1)
        check_range("model.ema_end", self.ema_end, 0, 1)
        if self.proprio is not None:
            self.proprio = [int(i) for i in self.proprio]
            if self.encoder != "fusion":
                raise ConfigError(
                    f"model.proprio={self.proprio} picks the state read beside the frames; "
                    f"it needs model.encoder=fusion (now {self.encoder}), or drop it"
                )
            if (
                not self.proprio
                or min(self.proprio) < 0
                or len(set(self.proprio)) < len(self.proprio)
            ):
                raise ConfigError(
                    f"model.proprio={self.proprio} must be distinct indices >= 0 of the state "
                    f"vector, e.g. [4, 5]"
                )


def input_names(encoder: str) -> tuple[str, ...]:
    """The inputs an encoder kind reads: ("state",), ("pixels",) or both."""
    return {"mlp": ("state",), "cnn": ("pixels",), "fusion": ("state", "pixels")}[encoder]


class WorldModel(nn.Module):
    """A latent world model, in the vocabulary of DESIGN.md section 4.

    ``encode(inputs)`` -> (B, ..., D), where ``inputs`` maps input names to raw dataset values
    (``{"state": (B, ..., O) floats, "pixels": (B, ..., [S,] H, W, C) uint8}``; a state model
    also takes the state tensor itself). :attr:`input_keys` names the dataset key of each.
    ``encode_target`` is the EMA copy, the source of prediction targets (no gradient).
    ``predict`` is one step, ``rollout`` (B, D), (B, H, A) -> (B, H, D) imagines H.
    ``cost(z, goal_z)`` is the intrinsic cost: a weighted latent distance to the goal plus the
    learned cost head; ``value(z, goal_z)`` the critic's cost-to-go beyond (when ``critic``).

    The cost head embeds a latent into a small goal space, g(z) (..., goal_dim), and predicts
    the task cost as ||g(z) - g(goal_z)||: a metric by construction, trained to match the
    distance between achieved goals, and cheap enough to score every imagined state.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        cfg: ModelConfig,
        obs_mean: torch.Tensor | None = None,
        obs_std: torch.Tensor | None = None,
        action_low: torch.Tensor | None = None,
        action_high: torch.Tensor | None = None,
        image_shape: tuple[int, int, int] | None = None,
        state_key: str = INPUT_KEYS["state"],
    ) -> None:
        super().__init__()
        # What the checkpoint it was loaded from recorded (dataset, env, provenance); saved again
        # by save() unless told otherwise, so a re-saved model keeps where it came from.
        self.meta: dict[str, Any] = {}
        if cfg.encoder not in ENCODERS:
            raise ConfigError(f"model.encoder={cfg.encoder!r} is unknown; choose from {ENCODERS}")
        if cfg.predictor not in PREDICTORS:
            raise ConfigError(
                f"model.predictor={cfg.predictor!r} is unknown; choose from {PREDICTORS}"
            )
        self.cfg = cfg
        self.obs_dim, self.action_dim, self.latent_dim = obs_dim, action_dim, cfg.latent_dim
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        names = input_names(cfg.encoder)
        if "pixels" in names and self.image_shape is None:
            raise ConfigError(
                f"model.encoder={cfg.encoder} reads pixels, but the dataset has none; collect "
                f"with pixels=64 or use model.encoder=mlp"
            )
        # A goal task's state is obs/observation; a gym env's Box observation is stored as obs.
        self.state_key = state_key
        self.input_keys = {n: state_key if n == "state" else INPUT_KEYS[n] for n in names}
        self.register_buffer("obs_mean", torch.zeros(obs_dim) if obs_mean is None else obs_mean)
        self.register_buffer("obs_std", torch.ones(obs_dim) if obs_std is None else obs_std)
        self.register_buffer(
            "action_low", -torch.ones(action_dim) if action_low is None else action_low
        )
        self.register_buffer(
            "action_high", torch.ones(action_dim) if action_high is None else action_high
        )
        if cfg.proprio is not None and max(cfg.proprio) >= obs_dim:
            raise ConfigError(
                f"model.proprio={cfg.proprio} indexes past the state vector's {obs_dim} "
                f"values; use indices below {obs_dim}"
            )
        self.encoder = make_encoder(
            cfg.encoder,
            obs_dim=obs_dim if cfg.proprio is None else len(cfg.proprio),
            image_shape=self.image_shape,
            frame_stack=cfg.frame_stack,
            latent_dim=cfg.latent_dim,
            hidden=cfg.hidden,
            depth=cfg.depth,
            width=cfg.width,
        )
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = make_predictor(
            cfg.predictor, cfg.latent_dim, action_dim, cfg.hidden, cfg.depth, cfg.history
        )
        self.task = cfg.task
        self.cost_head = None
        self.critic = self.critic_target = self.actor = None
        self.reward_head = self.continuation = self.q = self.q_target = self.policy = None
        if cfg.task not in TASKS or (cfg.task == "reward" and cfg.reward_scale is None):
            raise ConfigError(
                f"model.task={cfg.task!r}, reward_scale={cfg.reward_scale}: build the model "
                f"for a dataset (wmrobot.train.data.build_model), which resolves them"
            )
        if cfg.task == "reward":
            self._reward_heads(cfg, action_dim)
        else:
            self._goal_heads(cfg, action_dim)
        # Built last: a model without an ensemble draws its initial weights as before.
        self.members = nn.ModuleList(
            make_predictor(cfg.predictor, cfg.latent_dim, action_dim, cfg.hidden, cfg.depth,
                           cfg.history)
            for _ in range(cfg.ensemble - 1)
        )  # fmt: skip

    def _goal_heads(self, cfg: ModelConfig, action_dim: int) -> None:
        self.cost_head = mlp(cfg.latent_dim, cfg.hidden, cfg.goal_dim, 1)
        if cfg.critic:  # the target network of its TD updates travels with it
            self.critic = Critic(
                cfg.latent_dim, cfg.critic_hidden, cfg.critic_depth, cfg.critic_embed
            )
            self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        if cfg.actor:  # trained by `wmrobot distill` (wmrobot.distill)
            self.actor = Actor(cfg.latent_dim, action_dim, cfg.actor_hidden, cfg.actor_depth)

    def _reward_heads(self, cfg: ModelConfig, action_dim: int) -> None:
        d, h, depth = cfg.latent_dim, cfg.head_hidden, cfg.head_depth
        self.scalar = Scalar(cfg.reward_loss, cfg.bins, scale=cfg.reward_scale)
        # Values are sums of ~1 / (1 - gamma) rewards: regression measures them in that unit.
        self.value_scalar = Scalar(
            cfg.reward_loss, cfg.bins, scale=cfg.reward_scale / max(1 - self.gamma, 1e-3)
        )
        self.reward_head = mlp(d + action_dim, h, self.scalar.outputs, depth)
        if cfg.continuation:
            self.continuation = mlp(d, h, 1, depth)
        self.q = QEnsemble(d, action_dim, h, depth, cfg.q_heads, self.value_scalar.outputs)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.policy = GaussianPolicy(d, action_dim, h, depth)

    @property
    def frames(self) -> int:
        """Frames per pixel input: ``frame_stack``, or 1 for a model without pixels."""
        return self.cfg.frame_stack if "pixels" in self.input_keys else 1

    def window_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Encoder inputs along dataset windows: ``batch[key]`` (B, T + S - 1, ...) for each
        of :attr:`input_keys`, S = :attr:`frames`. Pixels become the stack of their S latest
        frames (B, T, S, H, W, C), newest last; other inputs drop their first S - 1 rows."""
        s, inputs = self.frames, {}
        for name, key in self.input_keys.items():
            x = batch[key]
            if name == "pixels" and s > 1:
                inputs[name] = x.unfold(1, s, 1).permute(0, 1, 5, 2, 3, 4)
            else:
                inputs[name] = x[:, s - 1 :]
        return inputs

    @property
    def has_value(self) -> bool:
        return self.critic is not None or self.q is not None

    @property
    def gamma(self) -> float:
        return 0.99 if self.cfg.gamma is None else self.cfg.gamma

    def config_dict(self) -> dict:
        return {
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "state_key": self.state_key,
            **asdict(self.cfg),
        }

    # ---------------------------------------------------------------------------- save, load
    def save(self, directory: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Write the weights (``model.pt``) and ``meta`` plus the model's config and provenance
        (``meta.json``) into ``directory``; return it."""
        meta = self.meta if meta is None else meta
        return write_model_dir(directory, self.state_dict(), {**meta, "model": self.config_dict()})

    @classmethod
    def load(cls, directory: str | Path) -> WorldModel:
        """The model saved in ``directory``, in eval mode; never executes code from the files."""
        try:
            spec = dict(read_meta(directory)["model"])
            obs_dim, action_dim = spec.pop("obs_dim"), spec.pop("action_dim")
            image_shape = spec.pop("image_shape", None)
            state_key = spec.pop("state_key", INPUT_KEYS["state"])
            model = cls(
                obs_dim, action_dim, ModelConfig(**spec), image_shape=image_shape,
                state_key=state_key,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{str(Path(directory) / META)!r} is malformed: {e}") from None
        try:
            model.load_state_dict(read_weights(directory))
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise CheckpointError(
                f"{str(Path(directory) / WEIGHTS)!r} does not match its model config: {first}"
            ) from None
        model.meta = read_meta(directory)
        return model.eval()

    # ------------------------------------------------------------------------------ encoding
    def _inputs(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not isinstance(obs, dict):
            obs = {"state": obs}
        missing = [k for k in self.input_keys if k not in obs]
        if missing:
            raise KeyError(f"the {self.cfg.encoder} encoder needs input {missing[0]!r}")
        out = {k: obs[k] for k in self.input_keys}
        if "state" in out:
            state = out["state"].float()
            out["state"] = (state - self.obs_mean) / self.obs_std.clamp_min(STD_FLOOR)
            if self.cfg.proprio is not None:
                out["state"] = out["state"][..., self.cfg.proprio]
        return out

    def encode(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(self._inputs(obs))

    @torch.no_grad()
    def encode_target(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.target_encoder(self._inputs(obs))

    # ------------------------------------------------------------------------------ dynamics
    def predict(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """One step from ``z`` alone (no history): (..., D), (..., A) -> (..., D)."""
        lead = z.shape[:-1]
        z2, a2 = z.reshape(-1, z.shape[-1]), a.reshape(-1, a.shape[-1])
        nxt, _ = self.predictor.step(z2, a2, self.predictor.init_state(z2))
        return nxt.view(*lead, -1)

    def predict_sequence(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: z (B, T, D), a (B, T, A) -> predictions of z_{t+1} (B, T, D), each
        from the latents and actions up to t."""
        return self.predictor(z, a)

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Imagine ``H`` steps: z0 (..., D), actions (..., H, A) -> latents (..., H, D)."""
        lead = z0.shape[:-1]
        z = z0.reshape(-1, z0.shape[-1])
        acts = actions.reshape(-1, *actions.shape[-2:])
        state = self.predictor.init_state(z)
        zs = []
        for t in range(acts.shape[1]):
            z, state = self.predictor.step(z, acts[:, t], state)
            zs.append(z)
        return torch.stack(zs, dim=1).view(*lead, acts.shape[1], -1)

    def disagreement(
        self, z: torch.Tensor, a: torch.Tensor, first: torch.Tensor | None = None
    ) -> torch.Tensor:
        """How far the ensemble's predictions of the next latent spread: the norm over latent
        dimensions of their standard deviation across members, (..., D), (..., A) -> (...);
        0 without an ensemble. ``first``: the first predictor's prediction, if already made."""
        if not len(self.members):
            return z.new_zeros(z.shape[:-1])
        first = self.predict(z, a) if first is None else first
        preds = [first] + [m(z, a) for m in self.members]
        mean = sum(preds) / len(preds)
        # ||std over members||: sqrt of the summed per-dimension variances (torch.std over the
        # member axis is several times slower on a CPU).
        return (sum((p - mean).pow(2) for p in preds) / len(preds)).sum(-1).sqrt()

    # --------------------------------------------------------------------------------- costs
    def task_cost(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        """The cost head's estimate of the task cost: (..., D), (..., D) -> (...)."""
        diff = self.cost_head(z) - self.cost_head(goal_z)
        return torch.sqrt(diff.pow(2).sum(-1) + COST_EPS)

    def cost(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        """Intrinsic cost of being at ``z`` when aiming for ``goal_z``: (..., D) -> (...)."""
        distance = (z - goal_z).pow(2).mean(-1)
        return self.cfg.latent_weight * distance + self.cfg.cost_weight * self.task_cost(z, goal_z)

    def value(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        """The critic's cost-to-go from ``z`` to ``goal_z``: (..., D), (..., D) -> (...); on a
        reward task, minus the return-to-go :meth:`state_value` (``goal_z`` unused)."""
        if self.q is not None:
            return -self.state_value(z)
        if self.critic is None:
            raise RuntimeError("this model has no critic; train it with model.critic=true")
        z, goal_z = torch.broadcast_tensors(z, goal_z)
        return self.critic(z, goal_z)

    def act(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        """Mode-1: the actor head's action, inside the action bounds: (..., D) -> (..., A); on
        a reward task, the policy prior's mode (``goal_z`` unused)."""
        if self.policy is not None:
            return self.policy_action(z)
        if self.actor is None:
            raise RuntimeError("this model has no actor head; make one with `wmrobot distill`")
        mid, half = self.action_scale()
        return mid + self.actor(z, goal_z) * half  # the actor's tanh in [-1, 1]

    # -------------------------------------------------------------------------- reward tasks
    def reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Predicted reward of taking ``a`` at ``z``: (..., D), (..., A) -> (...)."""
        return self.scalar.value(self.reward_head(torch.cat([z, a], dim=-1)))

    def cont(self, z: torch.Tensor) -> torch.Tensor:
        """Probability that the episode goes on at ``z`` (1 for envs that never terminate)."""
        if self.continuation is None:
            return torch.ones(z.shape[:-1], dtype=z.dtype, device=z.device)
        return torch.sigmoid(self.continuation(z)[..., 0])

    def q_values(self, z: torch.Tensor, a: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Each Q head's value of ``a`` at ``z``: (..., D), (..., A) -> (n, ...)."""
        return self.value_scalar.value((self.q_target if target else self.q)(z, a))

    def policy_action(self, z: torch.Tensor, generator: torch.Generator | None = None):
        """The policy prior's action inside the bounds: sampled, or its mode when
        ``generator`` is None: (..., D) -> (..., A)."""
        u = self.policy.mode(z) if generator is None else self.policy.sample(z, generator)[0]
        mid, half = self.action_scale()
        return mid + u * half

    def state_value(self, z: torch.Tensor) -> torch.Tensor:
        """V(z) = mean over the Q heads of Q(z, pi(z)), pi's mode: (..., D) -> (...)."""
        return self.q_values(z, self.policy_action(z)).mean(0)

    def export(self) -> ExportedModel:
        """This model as plain arrays, for compiled consumers (:mod:`wmrobot.model.export`)."""
        return export_model(self)

    def action_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mid, half) of the action bounds: an action is mid + half * u for u in [-1, 1]."""
        return (self.action_high + self.action_low) / 2, (self.action_high - self.action_low) / 2

    # ------------------------------------------------------------------------------- targets
    def momentum(self, step: int, total: int) -> float:
        """The EMA momentum at ``step`` of ``total``: ``ema`` rising to ``ema_end`` (cosine)."""
        start = self.cfg.ema
        end = start if self.cfg.ema_end is None else max(self.cfg.ema_end, start)
        progress = min(step / max(total - 1, 1), 1.0)
        return end - (end - start) * (1 + math.cos(math.pi * progress)) / 2

    @torch.no_grad()
    def update_target(self, momentum: float | None = None) -> None:
        """EMA step of the target encoder towards the online encoder."""
        m = self.cfg.ema if momentum is None else momentum
        for p_t, p in zip(self.target_encoder.parameters(), self.encoder.parameters(), strict=True):
            p_t.lerp_(p, 1.0 - m)
